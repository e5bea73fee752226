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

#include "convoke/client/detail/task_registry.hpp"
#include "convoke/client/error.hpp"
#include "convoke/client/message.hpp"
#include "convoke/client/options.hpp"
#include "convoke/client/task.hpp"
#include "convoke/common/trace_event.hpp"

namespace spdlog {
class logger;
}

namespace convoke {

namespace detail {
struct agent_core;
struct agent_handle;
} // namespace detail

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
  /// Messages that arrived after teardown() (while the agent said Goodbye);
  /// they are logged, not handed to agent code.
  uint64_t after_teardown = 0;
};

class agent {
public:
  using message_handler = std::function<void(const message&)>;

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
  /// message can be sent. Tasks end right after it, and no message handler
  /// runs after it: messages still arriving are logged and counted
  /// (`agent_stats::after_teardown`), not handled. `on_notice` still runs:
  /// a Notice is about what the agent sent (its last message went nowhere).
  virtual void teardown() {}

  // -- sending (from hooks and handlers) --------------------------------------

  /// Sends to every other agent (subject to their route subscriptions).
  std::error_code broadcast(std::string_view payload, const send_options& opts = {});

  /// Broadcasts on a route, which must be concrete: a pattern
  /// ("weather.*") or an empty token ("a..b") is `errc::invalid_argument`
  /// and nothing is sent.
  std::error_code publish(std::string_view route, std::string_view payload,
                          const send_options& opts = {});

  /// Sends to one agent by name.
  std::error_code send_to(std::string_view recipient, std::string_view payload,
                          const send_options& opts = {});

  /// Sends a request. The task succeeds with the reply, or fails with
  /// `timeout`, `refused` (e.g. unknown recipient), `connection_lost`,
  /// `stopped`, `not_connected`, ...; never before this call returns. Only a
  /// reply from `recipient` answers it, and its request id on the wire is
  /// random (CSPRNG), so no other agent can answer in the recipient's place.
  /// Cancelling it makes the SDK ignore the reply.
  task<message> request(std::string_view recipient, std::string_view payload, duration timeout,
                        const send_options& opts = {});

  /// Asks the server which agents are connected: the names starting with
  /// `prefix`, sorted, one page at a time (`list_options::after`). An
  /// identity whose `send` right is restricted sees only the names it may
  /// send to. The server answers in the order of what the agent sent. The
  /// task fails with `unsupported` (the server does not list agents: see
  /// `session_info::features`; nothing is sent), `not_connected`, `timeout`,
  /// `connection_lost`, `stopped`, or `refused` (e.g. over a rate limit:
  /// each listing counts like a message).
  task<agent_list> list_agents(std::string_view prefix = {}, const list_options& opts = {});

  /// Watches the server's message traces live (feature "observe"; needs the
  /// observe right: the identity's, or the server's
  /// trace.anonymous-observe). `on_event` gets each event that passes the
  /// filter, `on_missed` how many were dropped because this agent did not
  /// keep up (the server never slows relaying for an observer). One
  /// observation per agent. The task runs until cancelled (the server is
  /// told to stop; it ends `cancelled`) and fails with `refused`
  /// ("invalid_filter: ...", "permission_denied: ...",
  /// "too_many_observers: ..."), `unsupported` (nothing is sent),
  /// `invalid_argument` (already observing), `not_connected`,
  /// `connection_lost` (not resumed on reconnect) or `stopped`.
  task<void> observe(observe_options opts, std::function<void(const trace::event&)> on_event,
                     std::function<void(uint64_t missed)> on_missed = {});

  /// Answers a request (a message with `is_request()`), keeping its trace id.
  std::error_code reply(const message& request, std::string_view payload,
                        const send_options& opts = {});

  // -- routes -----------------------------------------------------------------

  /// Receive broadcasts on `route`, a route or a pattern ("weather.*.paris":
  /// "*" is one token; "weather.>": ">" as the last token is one or more).
  /// With at least one subscription, an agent gets only broadcasts on its
  /// routes (plus direct messages).
  void subscribe(const std::string& route);
  void unsubscribe(const std::string& route);

  /// Subscribes to `route` and routes its messages to `handler` instead of
  /// `on_message`. May be called before the agent starts. For a pattern, the
  /// handler gets the deliveries whose route it matches; a delivery goes to
  /// one handler: the exact route's if there is one, else the first
  /// registered pattern that matches.
  void on_route(const std::string& route, message_handler handler);

  // -- tasks ------------------------------------------------------------------
  //
  // Each returns a `task` handle (task.hpp): cancel it, ask its status, or
  // give it a continuation that receives the outcome exactly once. Started
  // before the agent runs (e.g. in a constructor), a task waits and starts
  // with the agent. Started inside on_connect(), it belongs to that session
  // unless `task_options::outlive_session` is set.

  /// Runs `fn` every `interval` on this agent (a delayed message to itself)
  /// until cancelled or the agent stops; then the task ends `cancelled`. An
  /// exception in `fn` goes to `on_error` and the task keeps running.
  task<void> every(duration interval, std::function<void()> fn, task_options opts = {});

  /// Runs `fn` once after `delay`. The task succeeds when `fn` returns and
  /// fails (`errc::failed`, the exception's text) if it throws.
  task<void> after(duration delay, std::function<void()> fn, task_options opts = {});

  /// Runs `work` on its own thread (a detached actor); the task succeeds with
  /// its result, or fails with the text of what it threw. `work` takes no
  /// argument or a `cancel_token`; after `cancel()` the token reports
  /// cancelled (the thread itself cannot be interrupted) and the result is
  /// ignored.
  template <class Work>
  auto run_blocking(Work work, task_options opts = {});

  /// Starts a child actor that does asynchronous work: `body(ctx)` runs on
  /// the child, which may set timers (`ctx.after`) and ends with
  /// `ctx.succeed(value)` or `ctx.fail(text)` (or by throwing). The child
  /// runs concurrently with the agent: it must not touch agent state; talk
  /// back through the outcome (or `agent::post`). Cancelling the task stops
  /// the child.
  template <class T>
  task<T> spawn_task(std::function<void(task_context<T>&)> body, task_options opts = {});

  // -- control ----------------------------------------------------------------

  /// Stops the agent. At once: no reconnect, new requests fail with
  /// `errc::stopped`. Then, as the agent's next step (never inside this
  /// call): pending requests fail with `errc::stopped`, teardown() runs,
  /// every other task ends `cancelled` (child tasks after their cleanup), and
  /// the agent says Goodbye and disconnects. `run_client` then returns
  /// `exit_code`. Call it on the agent (from hooks or handlers); from other
  /// threads use `post()` or `runtime::stop_all()`.
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

  detail::task_registry& tasks() {
    return *tasks_;
  }
  template <class T>
  std::shared_ptr<detail::task_cell<T>> open_task(const task_options& opts) {
    return tasks_->open<T>(opts, in_on_connect());
  }
  bool in_on_connect() const noexcept;
  void start_timer(std::shared_ptr<detail::task_cell<void>> cell, duration interval,
                   std::function<void()> fn, bool periodic);
  /// Starts a job (blocking) or child task once the agent runs; `finish`
  /// settles the typed task from the worker's failure text ("" = success).
  void start_worker(std::shared_ptr<detail::task_cell_base> cell, bool blocking,
                    std::function<void(const cancel_token&)> work,
                    std::function<void(detail::child_core*)> child,
                    std::function<void(const std::string& failure)> finish);

  std::string requested_name_;
  std::vector<std::string> initial_routes_;
  std::vector<std::pair<std::string, message_handler>> initial_handlers_;
  session_info session_;
  agent_stats stats_;
  detail::agent_core* core_ = nullptr;
  std::shared_ptr<detail::agent_handle> handle_;
  std::unique_ptr<detail::task_registry> tasks_;
  /// Timers and workers started before the agent runs, started by it.
  std::vector<std::function<void(detail::agent_core&)>> waiting_starts_;
};

template <class Work>
auto agent::run_blocking(Work work, task_options opts) {
  constexpr bool takes_token = std::is_invocable_v<Work&, const cancel_token&>;
  using result =
    typename std::conditional_t<takes_token, std::invoke_result<Work&, const cancel_token&>,
                                std::invoke_result<Work&>>::type;
  auto cell = open_task<result>(opts);
  // The worker writes its result here; the agent reads it after the job's
  // completion message (which orders the two).
  auto slot
    = std::make_shared<std::optional<std::conditional_t<std::is_void_v<result>, bool, result>>>();
  auto finish = [cell, slot, this](const std::string& failure) {
    if (!failure.empty())
      tasks().fail(*cell, error{make_error_code(errc::failed), failure});
    else if constexpr (std::is_void_v<result>)
      tasks().succeed(*cell);
    else
      tasks().succeed(*cell, std::move(**slot));
  };
  start_worker(
    cell, true,
    [w = std::move(work), slot](const cancel_token& tok) mutable {
      if constexpr (std::is_void_v<result>) {
        if constexpr (takes_token)
          w(tok);
        else
          w();
        slot->emplace(true);
      } else if constexpr (takes_token) {
        slot->emplace(w(tok));
      } else {
        slot->emplace(w());
      }
    },
    nullptr, std::move(finish));
  return task<result>{std::move(cell)};
}

template <class T>
task<T> agent::spawn_task(std::function<void(task_context<T>&)> body, task_options opts) {
  auto cell = open_task<T>(opts);
  auto ctx = std::make_shared<task_context<T>>();
  auto finish = [cell, ctx, this](const std::string& failure) {
    if (!failure.empty())
      tasks().fail(*cell, error{make_error_code(errc::failed), failure});
    else if constexpr (std::is_void_v<T>)
      tasks().succeed(*cell);
    else
      tasks().succeed(*cell, std::move(*ctx->value_));
  };
  start_worker(
    cell, false, nullptr,
    [body = std::move(body), ctx](detail::child_core* core) {
      ctx->core_ = core;
      body(*ctx);
    },
    std::move(finish));
  return task<T>{std::move(cell)};
}

} // namespace convoke
