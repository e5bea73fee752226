#pragma once

// `convoke trace --file`: reading JSON trace files (trace.format = json),
// rotated sets included, line by line, with every unreadable line reported
// as file:line and skipped; following a file as the server appends to it and
// rotates it. Free of CAF (unit-tested with files written by the tests).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convoke/common/trace_event.hpp"

namespace convoke::cli {

/// Lines longer than this are reported and skipped unparsed.
inline constexpr size_t max_trace_line_bytes = (8u << 20) + 1024;

/// The name spdlog's rotating sink gives rotation `index` of `base`
/// (trace.max-files): "t.json" -> "t.1.json", "trace" -> "trace.1",
/// "/d.x/.hidden" -> "/d.x/.hidden.1"; index 0 is `base` itself.
std::string rotated_name(const std::string& base, unsigned index);

/// The existing files of the rotated set of `base`, oldest first:
/// base.N.ext ... base.1.ext, then base (if it exists). Indices up to 1000
/// (the largest trace.max-files) are looked for.
std::vector<std::string> rotated_set(const std::string& base);

/// Where a line came from.
struct line_origin {
  std::string file;
  uint64_t line = 0;
};

/// A line that is not a trace event: "file:line: what".
struct read_problem {
  line_origin where;
  std::string text;
  std::string to_string() const;
};

/// Audience definitions seen so far (boot, number) -> recipients, bounded
/// (the oldest numbers are forgotten first).
class audience_book {
public:
  static constexpr size_t max_audiences = 4096;
  void learn(const trace::event& ev);
  /// Fills `ev.recipients` of a broadcast from its audience, if known.
  void resolve(trace::event& ev) const;

private:
  std::map<std::pair<std::string, uint64_t>, std::vector<std::string>> known_;
};

/// What to show (`--agent`, `--route`, `--trace`, `--since`). Audience
/// definitions never pass (they are resolved into broadcasts instead).
struct trace_filter {
  /// Exact names: the sender, the recipient or any resolved recipient.
  std::vector<std::string> agents;
  /// Route patterns in the router's syntax ("a.*", "a.>").
  std::vector<std::string> routes;
  /// Raw trace id bytes.
  std::string trace_id;
  /// Events at or after this time (unix ns).
  int64_t since_ns = 0;
  bool matches(const trace::event& ev) const;
};

/// Parses --since: a duration before `now_ns` ("5m", "90s", "2h") or an
/// RFC 3339 time. The error text is for "--since: ...".
std::optional<int64_t> parse_since(std::string_view text, int64_t now_ns, std::string& error);

/// Reads a list of files line by line (JSON trace events), audiences
/// resolved. Problems go to `on_problem` and are counted; reading goes on.
class trace_reader {
public:
  using event_fn = std::function<void(trace::event&, const line_origin&, std::string_view line)>;
  using problem_fn = std::function<void(const read_problem&)>;

  trace_reader(event_fn on_event, problem_fn on_problem);

  /// Reads `path` to its end. A last line without newline is a problem
  /// ("cut short"). False if the file cannot be opened (a problem too).
  bool read_file(const std::string& path);

  /// Reads the rotated sets of `bases` (oldest files first, each file once).
  void read_all(const std::vector<std::string>& bases);

  /// Follows `base` like `tail -F`: reads what is there, then waits for
  /// more lines,
  /// polling every `poll` (no busy loop), across rotations (the rest of the
  /// renamed file is read before the new one) and truncation. Returns when
  /// `wait` returns true (it is called between polls and sleeps up to its
  /// argument, e.g. for a termination signal).
  void follow(const std::string& base, const std::function<bool(std::chrono::milliseconds)>& wait,
              std::chrono::milliseconds poll = std::chrono::milliseconds{200});

  uint64_t problems() const noexcept {
    return problems_;
  }
  uint64_t events() const noexcept {
    return events_;
  }

private:
  /// Splits `data` into lines, keeps an unfinished line in `partial_`.
  void feed(std::string_view data, line_origin& where);
  void line(std::string_view text, const line_origin& where);
  void problem(const line_origin& where, std::string text);

  event_fn on_event_;
  problem_fn on_problem_;
  audience_book audiences_;
  std::string partial_;
  /// The unfinished line is over the limit: skip to its end.
  bool skipping_ = false;
  uint64_t problems_ = 0;
  uint64_t events_ = 0;
};

} // namespace convoke::cli
