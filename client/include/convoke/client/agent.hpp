#pragma once

/// @file
/// The agent: subclass it, override the hooks you need, run it with
/// `run_client()` (or a `runtime` for several agents in one process).
///
/// Every agent is driven by its own actor. All hooks, message handlers,
/// periodic tasks and completion callbacks of one agent run one at a time on
/// that actor, so agent code needs no locks. Never block in them: use
/// `run_blocking` for blocking work.
///
/// Lifecycle, in order:
///   setup()        once, when the actor starts (before connecting)
///   on_connect()   after each Welcome from the server
///   on_message()   for each delivered message (or a route handler)
///   on_disconnect() when a session ends (the SDK may reconnect)
///   teardown()     once, when the agent stops (stop(), SIGINT/SIGTERM,
///                  fatal refusal); still connected, so it may send
///
/// Exceptions thrown by agent code are caught, reported to `on_error()`,
/// and the agent keeps running.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "convoke/client/error.hpp"
#include "convoke/client/message.hpp"
#include "convoke/client/options.hpp"

namespace spdlog {
class logger;
}

namespace convoke {

namespace detail {
struct agent_core;
struct agent_handle;
} // namespace detail

using duration = std::chrono::milliseconds;

/// Identifies a periodic task, a timer, a blocking job or a request.
using task_id = uint64_t;

/// Lets a blocking job notice that it was cancelled (or the agent stopped).
class cancel_token {
public:
  cancel_token() = default;
  explicit cancel_token(std::shared_ptr<const std::atomic<bool>> flag) : flag_(std::move(flag)) {}
  bool cancelled() const noexcept {
    return flag_ && flag_->load(std::memory_order_relaxed);
  }

private:
  std::shared_ptr<const std::atomic<bool>> flag_;
};

/// Counters of one agent.
struct agent_stats {
  uint64_t sent = 0;
  uint64_t received = 0;
  uint64_t notices = 0;
  uint64_t connects = 0;
  uint64_t errors = 0;
  /// Server heartbeats answered (the SDK does this on its own).
  uint64_t heartbeats = 0;
  /// Replies to a pending request that came from another agent than the one
  /// asked; they are ignored (and logged), never taken for the reply.
  uint64_t forged_replies = 0;
};

class agent {
public:
  using message_handler = std::function<void(const message&)>;
  using reply_handler = std::function<void(const message&)>;
  using error_handler = std::function<void(const request_error&)>;

  /// `name` is the agent name to request from the server; empty lets the
  /// server assign one.
  explicit agent(std::string name = {});
  virtual ~agent();

  agent(const agent&) = delete;
  agent& operator=(const agent&) = delete;

  // -- hooks ----------------------------------------------------------------

  /// Called once when the agent's actor starts, before connecting. Start
  /// periodic tasks (`every`) and open resources here.
  virtual void setup() {}

  /// Called after each successful handshake (`reconnected` tells which).
  virtual void on_connect(const session_info&) {}

  /// Called for each message that no route handler or pending request took.
  virtual void on_message(const message&) {}

  /// Called for each Notice from the server. The default logs warnings (a
  /// mistyped recipient, dropped messages, ...) at warn level and the rest
  /// at debug level; ERROR notices (refusals) are logged by the SDK in any
  /// case. Override it to handle them yourself.
  virtual void on_notice(const notice& n);

  /// Called when a session ends or a connection attempt fails.
  virtual void on_disconnect(const disconnect_info&) {}

  /// Called when agent code threw or a blocking job failed. The default logs
  /// the error; the agent keeps running either way.
  virtual void on_error(const error_info& err);

  /// Called once when the agent stops. Still connected if it was, so a last
  /// message can be sent. Periodic tasks are cancelled right after it.
  virtual void teardown() {}

  // -- sending (from hooks and handlers) --------------------------------------

  /// Sends to every other agent (subject to their route subscriptions).
  std::error_code broadcast(std::string_view payload, const send_options& opts = {});

  /// Broadcasts on a route.
  std::error_code publish(std::string_view route, std::string_view payload,
                          const send_options& opts = {});

  /// Sends to one agent by name.
  std::error_code send_to(std::string_view recipient, std::string_view payload,
                          const send_options& opts = {});

  /// Sends a request and calls exactly one of `on_reply` (with the reply) or
  /// `on_error` (timeout, unknown recipient, connection lost, agent stopping,
  /// ...), unless the request is cancelled with `cancel(id)`. Only a reply
  /// from `recipient` answers it, and its request id is random (CSPRNG), so
  /// no other agent can answer in the recipient's place.
  task_id request(std::string_view recipient, std::string_view payload, duration timeout,
                  reply_handler on_reply, error_handler on_error, const send_options& opts = {});

  /// Answers a request (a message with `is_request()`), keeping its trace id.
  std::error_code reply(const message& request, std::string_view payload,
                        const send_options& opts = {});

  // -- routes -----------------------------------------------------------------

  /// Receive broadcasts on `route`. With at least one subscription, an agent
  /// gets only broadcasts on its routes (plus direct messages).
  void subscribe(const std::string& route);
  void unsubscribe(const std::string& route);

  /// Subscribes to `route` and routes its messages to `handler` instead of
  /// `on_message`. May be called before the agent starts.
  void on_route(const std::string& route, message_handler handler);

  // -- tasks ------------------------------------------------------------------

  /// Runs `fn` every `interval` on this agent (a delayed message to itself),
  /// until cancelled or the agent stops. An exception in `fn` goes to
  /// `on_error` and the task keeps running.
  task_id every(duration interval, std::function<void()> fn, std::string name = {});

  /// Runs `fn` once after `delay`.
  task_id after(duration delay, std::function<void()> fn, std::string name = {});

  /// Cancels a task, a timer, a pending request (its handlers will not be
  /// called) or a blocking job (its token reports cancelled, its completion is
  /// not delivered). Returns false if `id` is not active.
  bool cancel(task_id id);

  /// Runs `work` on its own thread (a detached actor) and delivers its result
  /// to `done` on this agent. `work` takes no argument or a `cancel_token`.
  /// If `work` throws, `on_error` is called instead of `done`.
  template <class Work, class Done>
  task_id run_blocking(Work work, Done done, std::string name = {});

  // -- control ----------------------------------------------------------------

  /// Stops the agent: pending requests fail with `errc::stopped`, then
  /// teardown(), Goodbye, disconnect. `run_client` then returns `exit_code`.
  /// Call it on the agent (from hooks or handlers); from other threads use
  /// `post()` or `runtime::stop_all()`.
  void stop(int exit_code = 0);

  /// Runs `fn` on this agent. The only member that may be called from any
  /// thread; returns false if the agent is not running.
  bool post(std::function<void()> fn);

  /// The confirmed name while connected, the requested one otherwise.
  const std::string& name() const noexcept;

  bool connected() const noexcept;

  /// The current (or last) session.
  const session_info& session() const noexcept;

  /// Subscribed routes.
  std::vector<std::string> routes() const;

  agent_stats stats() const noexcept;

  /// This agent's logger (named "agent").
  spdlog::logger& log();

  /// @private Internal state, owned by the agent's actor while it runs.
  detail::agent_core* core() noexcept {
    return core_;
  }

private:
  friend struct detail::agent_core;

  task_id run_blocking_impl(std::function<void(const cancel_token&)> work,
                            std::function<void()> complete, std::string name);

  std::string requested_name_;
  std::vector<std::string> initial_routes_;
  std::vector<std::pair<std::string, message_handler>> initial_handlers_;
  session_info session_;
  agent_stats stats_;
  detail::agent_core* core_ = nullptr;
  std::shared_ptr<detail::agent_handle> handle_;
};

template <class Work, class Done>
task_id agent::run_blocking(Work work, Done done, std::string name) {
  constexpr bool takes_token = std::is_invocable_v<Work&, const cancel_token&>;
  using result =
    typename std::conditional_t<takes_token, std::invoke_result<Work&, const cancel_token&>,
                                std::invoke_result<Work&>>::type;
  if constexpr (std::is_void_v<result>) {
    return run_blocking_impl(
      [w = std::move(work)](const cancel_token& tok) mutable {
        if constexpr (takes_token)
          w(tok);
        else
          w();
      },
      [d = std::move(done)]() mutable { d(); }, std::move(name));
  } else {
    auto slot = std::make_shared<std::optional<result>>();
    return run_blocking_impl(
      [w = std::move(work), slot](const cancel_token& tok) mutable {
        if constexpr (takes_token)
          slot->emplace(w(tok));
        else
          slot->emplace(w());
      },
      [d = std::move(done), slot]() mutable { d(std::move(**slot)); }, std::move(name));
  }
}

} // namespace convoke
