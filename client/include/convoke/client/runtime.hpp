#pragma once

/// @file
/// Running agents: `run_client()` for the common one-agent program, and
/// `runtime` to host several agents in one process (demos, tests, tools).
///
/// A runtime owns the actor system (the "event loop" of asyncio terms); agent
/// code never touches it directly.

#include <chrono>
#include <memory>

#include "convoke/client/agent.hpp"
#include "convoke/client/options.hpp"

namespace convoke {

struct runtime_options {
  /// Scheduler threads for agent actors (blocking jobs get their own).
  int threads = 2;
};

class runtime {
public:
  explicit runtime(runtime_options opts = {});

  /// Stops every agent still running and waits for them.
  ~runtime();

  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Starts `a` (its actor calls setup() and connects). `a` must outlive the
  /// runtime, or at least its run. An agent can be started once.
  void start(agent& a, client_options opts);

  /// Asks every agent to stop (teardown, Goodbye). Thread-safe.
  void stop_all();

  /// Waits until every started agent has stopped. Returns the first nonzero
  /// exit code among them, or 0.
  int wait();

  /// Like `wait()`, but gives up after `timeout`; nullopt if agents are
  /// still running.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);

  /// Like `wait()`, but SIGINT/SIGTERM stop all agents (a second signal
  /// exits immediately). Call `block_termination_signals()` (from
  /// convoke/common/signals.hpp) before creating the runtime.
  int wait_with_signals();

  /// Number of agents still running.
  size_t running() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Runs one agent until it stops or the process gets SIGINT/SIGTERM, then
/// returns its exit code (0 after a signal).
int run_client(agent& a, client_options opts);

} // namespace convoke
