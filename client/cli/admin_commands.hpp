#pragma once

// The operator commands of the `convoke` CLI, on the admin listener:
// `server check`, `agents` and `top` (docs/operations.md).

#include <chrono>
#include <string>

#include "admin_client.hpp"
#include "ops.hpp"

namespace convoke::cli {

/// Prints one line and returns the Nagios exit code (0 OK, 1 WARNING,
/// 2 CRITICAL, 3 UNKNOWN).
int run_server_check(const admin_options& opts, const check_thresholds& t);

struct agents_args {
  std::string sort = "name";
  std::string name;
  bool json = false;
};

/// Prints the connected agents (every page of /connz). 0, or 1 if the
/// server could not be asked.
int run_agents(const admin_options& opts, const agents_args& args);

struct top_args {
  std::string sort = "in_rate";
  std::string name;
  std::chrono::milliseconds interval{1000};
  /// Screens to show (0: until q or Ctrl-C).
  long iterations = 0;
};

/// The live table; SIGINT and SIGTERM must be blocked (they are read from a
/// signalfd). 0 when quit, 1 if the server could not be asked (on a
/// terminal it keeps trying instead).
int run_top(const admin_options& opts, const top_args& args);

} // namespace convoke::cli
