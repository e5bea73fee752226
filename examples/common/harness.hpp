#pragma once

// Plumbing shared by the concept examples (examples/concepts/*.cpp):
//   - `--server host:port` connects to a running convoke-server; without it
//     the example starts its own server in-process on a free port;
//   - `say()` prints numbered lines in the order things happen;
//   - the scenario ends when an agent calls `done()` (exit code 0), on
//     SIGINT/SIGTERM, or after a timeout (exit code 1).

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "convoke/client.hpp"
#include "convoke/server/config.hpp"

namespace example {

/// Prints "[ 0.123s] who: text" (thread-safe, flushed at once).
void say(std::string_view who, std::string_view text);

template <class... Ts>
void sayf(std::string_view who, fmt::format_string<Ts...> f, Ts&&... xs) {
  say(who, fmt::format(f, std::forward<Ts>(xs)...));
}

class harness {
public:
  using server_tweak = std::function<void(convoke::server::server_config&)>;

  /// Parses the command line. Without --server, starts an in-process server
  /// (configured by `tweak`). Check `exit_now()` afterwards.
  harness(std::string name, std::string description, int argc, char** argv,
          server_tweak tweak = {});
  ~harness();

  /// True after --help or a usage error; return `exit_code()` from main.
  bool exit_now() const noexcept {
    return exit_now_;
  }
  int exit_code() const noexcept {
    return exit_code_;
  }

  /// Options that reach the server in use.
  convoke::client_options client() const;

  /// Starts an agent in the example's runtime.
  void start(convoke::agent& a);

  /// Runs until `done()`, a signal, or `timeout`; returns the exit code.
  int run(std::chrono::seconds timeout = std::chrono::seconds{30});

  /// Ends the scenario (thread-safe; usually called from an agent).
  void done(int code = 0);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
  bool exit_now_ = false;
  int exit_code_ = 0;
};

} // namespace example
