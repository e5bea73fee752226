#include "trace_command.hpp"

#include <algorithm>
#include <ostream>

#include <fmt/format.h>

#include "convoke/common/text.hpp"
#include "trace_view.hpp"

namespace convoke::cli {

namespace {

/// Problems on stderr, at most `limit` of them (then one summary line).
struct problem_printer {
  std::ostream& err;
  uint64_t shown = 0;
  static constexpr uint64_t limit = 100;
  void operator()(const read_problem& p) {
    if (++shown <= limit)
      err << "convoke trace: " << p.to_string() << '\n';
    else if (shown == limit + 1)
      err << "convoke trace: more unreadable lines (only the first " << limit << " are listed)\n";
  }
};

int finish(const trace_reader& reader, std::ostream& err) {
  if (reader.problems() == 0)
    return trace_exit::ok;
  err << fmt::format("convoke trace: {} unreadable line(s) or file(s) skipped, {} events read\n",
                     reader.problems(), reader.events());
  return reader.events() == 0 ? trace_exit::failure : trace_exit::unreadable;
}

} // namespace

int run_trace_list(const trace_list_args& args, std::ostream& out, std::ostream& err,
                   const wait_fn& wait) {
  problem_printer problems{err};
  trace_reader reader(
    [&](trace::event& ev, const line_origin&, std::string_view line) {
      if (!args.filter.matches(ev))
        return;
      if (args.json)
        out << line << '\n';
      else
        out << render_line(ev) << '\n';
      if (args.follow)
        out.flush();
    },
    std::ref(problems));
  if (!args.follow) {
    reader.read_all(args.files);
    out.flush();
    return finish(reader, err);
  }
  if (args.files.size() != 1) {
    err << "convoke trace: --follow follows one --file\n";
    return trace_exit::usage;
  }
  // The older files of the set, then the current one, followed.
  auto& base = args.files.front();
  for (auto& f : rotated_set(base))
    if (f != base)
      reader.read_file(f);
  reader.follow(base, wait);
  out.flush();
  return finish(reader, err);
}

int run_trace_show(const std::vector<std::string>& files, const std::string& trace_hex,
                   show_format format, std::ostream& out, std::ostream& err) {
  auto id = from_hex(trace_hex);
  if (!id || id->empty() || id->size() > 64) {
    err << "convoke trace show: '" << trace_hex
        << "' is not a trace id (hex digits, e.g. 4bf92f3577b34da6a3ce929d0e0e4736)\n";
    return trace_exit::usage;
  }
  conversation_builder builder(*id);
  problem_printer problems{err};
  // Pass 1 reports the unreadable lines; pass 2 reads the same files again.
  trace_reader first(
    [&](trace::event& ev, const line_origin&, std::string_view) { builder.first_pass(ev); },
    std::ref(problems));
  first.read_all(files);
  if (!builder.found()) {
    err << fmt::format("convoke trace show: no event with trace id {} in {}\n", to_hex(*id),
                       files.size() == 1 ? files.front() : "these files");
    return first.events() == 0 && first.problems() > 0 ? trace_exit::failure
                                                       : trace_exit::not_found;
  }
  trace_reader second(
    [&](trace::event& ev, const line_origin&, std::string_view) { builder.add(ev); }, {});
  second.read_all(files);
  auto conv = builder.finish();
  switch (format) {
  case show_format::text:
    out << render_sequence_text(conv);
    break;
  case show_format::mermaid:
    out << render_mermaid(conv);
    break;
  case show_format::html:
    out << render_html(conv);
    break;
  }
  out.flush();
  return finish(first, err);
}

int run_trace_stats(const std::vector<std::string>& files, std::chrono::nanoseconds window,
                    bool json, std::ostream& out, std::ostream& err) {
  problem_printer problems{err};
  // Pass 1: the time of the last event (the window ends there).
  int64_t last = 0;
  trace_reader first(
    [&](trace::event& ev, const line_origin&, std::string_view) {
      if (ev.what != trace::kind::audience)
        last = std::max(last, ev.ts_ns);
    },
    std::ref(problems));
  first.read_all(files);
  trace_stats stats;
  if (window.count() > 0 && last > window.count())
    stats.from_ns = last - window.count();
  trace_reader second(
    [&](trace::event& ev, const line_origin&, std::string_view) { stats.add(ev); }, {});
  second.read_all(files);
  double seconds = window.count() > 0 ? static_cast<double>(window.count()) / 1e9
                                      : static_cast<double>(stats.last_ns - stats.first_ns) / 1e9;
  if (json)
    out << stats.render_json(seconds) << '\n';
  else
    out << stats.render(seconds);
  out.flush();
  return finish(first, err);
}

} // namespace convoke::cli
