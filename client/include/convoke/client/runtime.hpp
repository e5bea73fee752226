#pragma once

/// @file
/// Running agents: `run_client()` for the common one-agent program, and
/// `runtime` to host several agents in one process (demos, tests, tools).
///
/// A runtime owns the actor system (the "event loop" of asyncio terms); agent
/// code never touches it directly.

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>

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

namespace detail {

/// The agent behind `run_until_complete`: starts the task once connected and
/// hands its outcome to the waiting thread.
template <class T>
class one_shot_agent final : public agent {
public:
  one_shot_agent(std::string name, std::function<task<T>(agent&)> start,
                 std::promise<expected<T>>& result)
    : agent(std::move(name)), start_(std::move(start)), result_(result) {}

  void on_connect(const session_info&) override {
    if (started_)
      return;
    started_ = true;
    try {
      task_ = start_(*this);
      task_.then([this](expected<T> r) {
        bool ok = r.has_value();
        set(std::move(r));
        stop(ok ? 0 : 1);
      });
    } catch (const std::exception& ex) {
      set(tl::unexpected<error>{error{make_error_code(errc::failed), ex.what()}});
      stop(1);
    }
  }

  void on_disconnect(const disconnect_info& d) override {
    // A script fails fast: no session from the first round of attempts
    // (each server once) is the answer.
    if (!started_ && (!d.will_reconnect || d.round_failed)) {
      set(tl::unexpected<error>{
        error{make_error_code(errc::not_connected), d.code + ": " + d.reason}});
      stop(1);
    }
  }

private:
  void set(expected<T> r) {
    if (!set_) {
      set_ = true;
      result_.set_value(std::move(r));
    }
  }

  std::function<task<T>(agent&)> start_;
  std::promise<expected<T>>& result_;
  task<T> task_;
  bool started_ = false;
  bool set_ = false;
};

} // namespace detail

/// asyncio's `loop.run_until_complete(coro)` for a script: starts a runtime
/// with one agent named `name`, calls `start(agent)` once it is connected,
/// waits (blocking the calling thread) for that task's outcome at most
/// `timeout`, then stops the agent and the runtime. Returns the outcome;
/// `errc::not_connected` (with the reason) if the first connection attempt
/// (with several servers: each of them once) fails or is refused; `errc::failed` if `start` throws;
/// `errc::timeout` if no outcome came in time. The task belongs to the session: if the session ends
/// first, that ends the task (a request fails with `connection_lost`).
///
///     auto reply = convoke::run_until_complete<convoke::message>(
///       opts, "script", [](convoke::agent& a) { return a.request("echo", "ping", 2s); }, 5s);
template <class T>
expected<T> run_until_complete(client_options opts, std::string name,
                               std::function<task<T>(agent&)> start, duration timeout) {
  std::promise<expected<T>> result;
  auto outcome = result.get_future();
  detail::one_shot_agent<T> a{std::move(name), std::move(start), result};
  runtime rt;
  rt.start(a, std::move(opts));
  bool ready = outcome.wait_for(timeout) == std::future_status::ready;
  rt.stop_all();
  rt.wait();
  if (!ready)
    return tl::unexpected<error>{
      error{make_error_code(errc::timeout),
            "no result within " + std::to_string(timeout.count()) + " ms"}};
  return outcome.get();
}

} // namespace convoke
