#pragma once

// `convoke trace` over trace files: list / follow events, `trace show`,
// `trace stats`. CAF-free; main.cpp parses the flags and runs the live
// variant (the SDK's observe) itself.
//
// Exit codes (docs/observing.md): 0 done; 1 a connection or protocol
// failure (live), or no file could be read at all; 2 usage; 3 some lines or
// files were unreadable (each reported as file:line on stderr, skipped; the
// rest was shown); 4 `trace show`: no event with that trace id.

#include <chrono>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "trace_files.hpp"

namespace convoke::cli {

namespace trace_exit {
inline constexpr int ok = 0;
inline constexpr int failure = 1;
inline constexpr int usage = 2;
inline constexpr int unreadable = 3;
inline constexpr int not_found = 4;
} // namespace trace_exit

/// Sleeps up to its argument; true when the command should end (a signal).
using wait_fn = std::function<bool(std::chrono::milliseconds)>;

struct trace_list_args {
  std::vector<std::string> files;
  bool follow = false;
  trace_filter filter;
  bool json = false;
};

/// `convoke trace --file ...`: the events (oldest first), then with
/// --follow the new ones until `wait` says stop.
int run_trace_list(const trace_list_args& args, std::ostream& out, std::ostream& err,
                   const wait_fn& wait);

enum class show_format { text, mermaid, html };

/// `convoke trace show HEX --file ...`.
int run_trace_show(const std::vector<std::string>& files, const std::string& trace_hex,
                   show_format fmt, std::ostream& out, std::ostream& err);

/// `convoke trace stats --file ... [--window]`: the last `window` of the
/// files (0: everything).
int run_trace_stats(const std::vector<std::string>& files, std::chrono::nanoseconds window,
                    bool json, std::ostream& out, std::ostream& err);

} // namespace convoke::cli
