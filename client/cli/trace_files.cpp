#include "trace_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/subject.hpp"

namespace convoke::cli {

std::string rotated_name(const std::string& base, unsigned index) {
  if (index == 0)
    return base;
  // As spdlog's file_helper::split_by_extension: the extension starts at
  // the last '.', unless that is the first or last character or belongs to
  // a directory or a hidden file's leading dot.
  auto dot = base.rfind('.');
  auto ext_ok = dot != std::string::npos && dot != 0 && dot != base.size() - 1;
  if (ext_ok) {
    auto slash = base.find_last_of('/');
    if (slash != std::string::npos && slash + 1 >= dot)
      ext_ok = false;
  }
  if (!ext_ok)
    return fmt::format("{}.{}", base, index);
  return fmt::format("{}.{}{}", base.substr(0, dot), index, base.substr(dot));
}

namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

} // namespace

std::vector<std::string> rotated_set(const std::string& base) {
  std::vector<std::string> out;
  for (unsigned i = 1000; i >= 1; --i)
    if (auto name = rotated_name(base, i); exists(name))
      out.push_back(std::move(name));
  if (exists(base))
    out.push_back(base);
  return out;
}

std::string read_problem::to_string() const {
  if (where.line == 0)
    return fmt::format("{}: {}", where.file, text);
  return fmt::format("{}:{}: {}", where.file, where.line, text);
}

// -- audiences -----------------------------------------------------------------

void audience_book::learn(const trace::event& ev) {
  if (ev.what != trace::kind::audience || ev.audience == 0)
    return;
  known_[{ev.boot, ev.audience}] = ev.recipients;
  if (known_.size() > max_audiences) {
    // Forget the lowest number of the boot just seen (numbers grow).
    auto it = known_.lower_bound({ev.boot, 0});
    if (it == known_.end() || it->first.first != ev.boot)
      it = known_.begin();
    known_.erase(it);
  }
}

void audience_book::resolve(trace::event& ev) const {
  if (ev.audience == 0 || !ev.recipients.empty() || ev.what == trace::kind::audience)
    return;
  if (auto it = known_.find({ev.boot, ev.audience}); it != known_.end())
    ev.recipients = it->second;
}

// -- filter ----------------------------------------------------------------------

bool trace_filter::matches(const trace::event& ev) const {
  if (ev.what == trace::kind::audience)
    return false;
  if (since_ns != 0 && ev.ts_ns < since_ns)
    return false;
  if (!trace_id.empty() && ev.trace_id != trace_id)
    return false;
  if (!routes.empty()) {
    bool any = false;
    for (auto& pattern : routes)
      if (!ev.route.empty() && proto::pattern_matches(pattern, ev.route)) {
        any = true;
        break;
      }
    if (!any)
      return false;
  }
  if (!agents.empty()) {
    auto named = [&](const std::string& name) {
      if (name.empty())
        return false;
      for (auto& a : agents)
        if (a == name)
          return true;
      return false;
    };
    bool any = named(ev.sender) || named(ev.recipient);
    for (size_t i = 0; !any && i < ev.recipients.size(); ++i)
      any = named(ev.recipients[i]);
    if (!any)
      return false;
  }
  return true;
}

std::optional<int64_t> parse_since(std::string_view text, int64_t now_ns, std::string& error) {
  if (auto ts = parse_timestamp(text))
    return *ts;
  if (auto d = parse_duration(text)) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*d).count();
    return now_ns - ns;
  }
  error = fmt::format("'{}' is neither a duration (like 90s, 5m, 2h) nor an RFC 3339 time "
                      "(like 2026-11-30T12:00:00Z)",
                      text);
  return std::nullopt;
}

// -- reader ----------------------------------------------------------------------

trace_reader::trace_reader(event_fn on_event, problem_fn on_problem)
  : on_event_(std::move(on_event)), on_problem_(std::move(on_problem)) {}

void trace_reader::problem(const line_origin& where, std::string text) {
  ++problems_;
  if (on_problem_)
    on_problem_(read_problem{where, std::move(text)});
}

void trace_reader::line(std::string_view text, const line_origin& where) {
  if (!text.empty() && text.back() == '\r')
    text.remove_suffix(1);
  if (text.find_first_not_of(" \t") == std::string_view::npos)
    return; // blank lines are not events, nor problems
  auto r = trace::parse_json(text);
  if (!r.ev) {
    // A text-format trace file given by mistake: say so once per line,
    // with what to do about it.
    std::string hint;
    if (!text.empty() && text.front() >= '0' && text.front() <= '9'
        && parse_timestamp(text.substr(0, text.find(' '))))
      hint = " (a text trace line? convoke trace reads trace.format = json files)";
    problem(where, r.error + hint);
    return;
  }
  ++events_;
  audiences_.learn(*r.ev);
  audiences_.resolve(*r.ev);
  if (on_event_)
    on_event_(*r.ev, where, text);
}

void trace_reader::feed(std::string_view data, line_origin& where) {
  while (!data.empty()) {
    auto nl = data.find('\n');
    auto piece = data.substr(0, nl);
    if (skipping_) {
      if (nl == std::string_view::npos)
        return;
      skipping_ = false;
      data.remove_prefix(nl + 1);
      continue;
    }
    if (partial_.size() + piece.size() > max_trace_line_bytes) {
      ++where.line;
      problem(where, fmt::format("line longer than {} bytes: skipped", max_trace_line_bytes));
      partial_.clear();
      if (nl == std::string_view::npos) {
        skipping_ = true;
        return;
      }
      data.remove_prefix(nl + 1);
      continue;
    }
    if (nl == std::string_view::npos) {
      partial_.append(piece);
      return;
    }
    ++where.line;
    if (partial_.empty()) {
      line(piece, where);
    } else {
      partial_.append(piece);
      line(partial_, where);
      partial_.clear();
    }
    data.remove_prefix(nl + 1);
  }
}

namespace {

/// Reads from `fd` until EOF or error; returns false on a read error.
template <class Fn>
bool drain(int fd, Fn&& fn) {
  std::string buf(1 << 16, '\0');
  for (;;) {
    auto n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return false;
    if (n == 0)
      return true;
    fn(std::string_view{buf.data(), static_cast<size_t>(n)});
  }
}

} // namespace

bool trace_reader::read_file(const std::string& path) {
  line_origin where{path, 0};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    problem(where, fmt::format("cannot open: {}", std::strerror(errno)));
    return false;
  }
  partial_.clear();
  skipping_ = false;
  bool ok = drain(fd, [&](std::string_view d) { feed(d, where); });
  int err = errno;
  ::close(fd);
  if (!ok)
    problem(where, fmt::format("read error: {}", std::strerror(err)));
  if (!partial_.empty() || skipping_) {
    line_origin last{path, where.line + 1};
    problem(last, "last line cut short (no newline at its end): skipped");
    partial_.clear();
    skipping_ = false;
  }
  return ok;
}

void trace_reader::read_all(const std::vector<std::string>& bases) {
  std::set<std::string> seen;
  for (auto& base : bases) {
    auto files = rotated_set(base);
    if (files.empty()) {
      problem(line_origin{base, 0}, "no such file (nor rotated files of it)");
      continue;
    }
    for (auto& f : files)
      if (seen.insert(f).second)
        read_file(f);
  }
}

void trace_reader::follow(const std::string& base,
                          const std::function<bool(std::chrono::milliseconds)>& wait,
                          std::chrono::milliseconds poll) {
  int fd = -1;
  ino_t ino = 0;
  dev_t dev = 0;
  off_t offset = 0;
  line_origin where{base, 0};
  auto read_more = [&] {
    drain(fd, [&](std::string_view d) {
      offset += static_cast<off_t>(d.size());
      feed(d, where);
    });
  };
  for (;;) {
    if (fd < 0) {
      fd = ::open(base.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        struct stat st {};
        ::fstat(fd, &st);
        ino = st.st_ino;
        dev = st.st_dev;
        offset = 0;
        where = line_origin{base, 0};
        partial_.clear();
        skipping_ = false;
      }
    }
    if (fd >= 0) {
      read_more();
      // Rotated (a new file under the name) or truncated?
      struct stat now {};
      bool renamed = ::stat(base.c_str(), &now) != 0 || now.st_ino != ino || now.st_dev != dev;
      struct stat mine {};
      ::fstat(fd, &mine);
      if (renamed) {
        read_more(); // what was written before the rename
        if (!partial_.empty())
          problem(line_origin{base, where.line + 1},
                  "last line before the rotation cut short: skipped");
        ::close(fd);
        fd = -1;
        continue; // open the new file right away
      }
      if (mine.st_size < offset) {
        problem(where, "file truncated: reading it again from its start");
        ::lseek(fd, 0, SEEK_SET);
        offset = 0;
        where.line = 0;
        partial_.clear();
        skipping_ = false;
        continue;
      }
    }
    if (wait(poll))
      break;
  }
  if (fd >= 0)
    ::close(fd);
}

} // namespace convoke::cli
