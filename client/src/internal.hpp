#pragma once

// SDK internals shared by the CAF translation units of convoke::client.
//
// Actors per agent:
//   agent actor      (scheduler)   runs all agent code; owns agent_core
//   connector        (detached)    blocking TCP connect with a timeout
//   connection       (broker, I/O) frames in and out of one socket
//   blocking jobs    (detached)    run_blocking work, one thread each

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>

#include "caf/all.hpp"
#include "caf/io/all.hpp"

#include "convoke/client/agent.hpp"
#include "convoke/client/error.hpp"
#include "convoke/common/secure_random.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/tls/tls.hpp"
#include "frames.hpp"
#include "link_machine.hpp"

namespace spdlog {
class logger;
}

namespace convoke::detail {

// connector/connection -> agent
using connected_atom = caf::atom_constant<caf::atom("connected")>;
using connect_failed_atom = caf::atom_constant<caf::atom("connfail")>;
using frames_atom = caf::atom_constant<caf::atom("frames")>;
using disconnected_atom = caf::atom_constant<caf::atom("disconn")>;
// agent -> connection
using write_atom = caf::atom_constant<caf::atom("write")>;
using credit_atom = caf::atom_constant<caf::atom("credit")>;
using limit_atom = caf::atom_constant<caf::atom("limit")>;
using close_atom = caf::atom_constant<caf::atom("close")>;
// agent timers and control
using task_tick_atom = caf::atom_constant<caf::atom("tasktick")>;
using job_done_atom = caf::atom_constant<caf::atom("jobdone")>;
using child_gone_atom = caf::atom_constant<caf::atom("childgone")>;
using request_timeout_atom = caf::atom_constant<caf::atom("reqtimeout")>;
using list_timeout_atom = caf::atom_constant<caf::atom("listtmout")>;
using reconnect_atom = caf::atom_constant<caf::atom("reconnect")>;
using handshake_timeout_atom = caf::atom_constant<caf::atom("hstimeout")>;
using watchdog_atom = caf::atom_constant<caf::atom("watchdog")>;
using post_atom = caf::atom_constant<caf::atom("post")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using stop_deadline_atom = caf::atom_constant<caf::atom("stopdl")>;
using stop_now_atom = caf::atom_constant<caf::atom("stopnow")>;
using linger_atom = caf::atom_constant<caf::atom("linger")>;

/// A closure posted to an agent from another thread.
struct closure {
  std::function<void()> fn;
};

/// The thread-safe way to reach a running agent from outside (post, stop).
struct agent_handle {
  std::mutex mtx;
  caf::actor actor; // null once the agent stopped
  bool post(std::function<void()> fn);
  bool stop(int exit_code);
};

/// State of an agent's actor. Agent member functions reach it through
/// `agent::core()` while they run on the actor.
struct agent_core {
  using self_ptr = caf::stateful_actor<agent_core>*;
  using steady = std::chrono::steady_clock;

  /// A timer (`after`) or periodic task (`every`), keyed by task id.
  struct timer {
    duration interval{0};
    std::function<void()> fn;
    std::shared_ptr<task_cell<void>> cell;
    bool periodic = false;
  };

  /// A blocking job or child task, keyed by task id.
  struct worker {
    std::shared_ptr<std::atomic<bool>> cancelled;
    /// Settles the typed task from the worker's failure text ("" = success).
    std::function<void(const std::string&)> finish;
  };

  struct pending_request {
    /// Only a reply from this agent answers the request.
    std::string recipient;
    std::shared_ptr<task_cell<message>> cell;
  };

  self_ptr self = nullptr;
  agent* user = nullptr;
  client_options opts;
  std::shared_ptr<spdlog::logger> log;

  // Connection.
  /// Connecting, handshake, watchdog, reconnect policy (CAF-free).
  link_machine link;
  caf::actor conn;
  std::shared_ptr<std::atomic<uint64_t>> out_pending = std::make_shared<std::atomic<uint64_t>>(0);
  std::string resume_token;
  bool had_session = false;
  std::string goodbye_code; // from the server, for the current connection
  std::string goodbye_reason;
  std::chrono::milliseconds goodbye_hint{0}; // its reconnect_after_ms
  std::vector<std::string> goodbye_to;       // its reconnect_to
  std::optional<notice> refusal;             // ERROR notice for the current connection
  proto::frame_splitter splitter{max_inbound_frame};
  v1::Frame frame;

  // Agent bookkeeping.
  std::set<std::string> routes;
  std::set<std::string> hello_routes; // the set sent in the current Hello
  /// Handlers of exact routes.
  std::unordered_map<std::string, agent::message_handler> route_handlers;
  /// Handlers of route patterns ("weather.>"), in registration order: a
  /// delivery no exact handler takes goes to the first that matches.
  std::vector<std::pair<std::string, agent::message_handler>> pattern_handlers;
  std::unordered_map<task_id, timer> timers;
  std::unordered_map<task_id, worker> workers;
  /// Child tasks still alive (their exit is no reason to stop the agent).
  std::map<caf::actor_addr, task_id> children;
  /// Keyed by the request id on the wire (random, see agent::request).
  std::unordered_map<uint64_t, pending_request> requests;
  /// ListAgents waiting for their AgentList, by request id (random, like
  /// requests', and never one of theirs: a Notice names either kind).
  std::unordered_map<uint64_t, std::shared_ptr<task_cell<agent_list>>> list_requests;
  /// The running agent::observe, if any.
  struct observation {
    uint64_t request_id = 0;
    std::shared_ptr<task_cell<void>> cell;
    std::function<void(const trace::event&)> on_event;
    std::function<void(uint64_t)> on_missed;
    std::function<void()> on_started;
    bool started = false;
  };
  std::optional<observation> observing;
  /// True while on_connect() runs: tasks started there are session-scoped.
  bool in_on_connect = false;
  uint64_t next_seq = 1;

  // Extension points (caf_interop.hpp).
  caf::message_handler sdk_handlers;
  std::function<void(const caf::down_msg&)> down_handler;

  // Stopping.
  int exit_code = 0;
  bool stop_started = false; // stop_now() ran
  bool stop_deadline_armed = false;
  bool stop_deadline_passed = false;
  bool awaiting_children = false; // finish() waits for cancelled child tasks
  /// What must outlive the actor's state (read by its exit functor).
  struct fate_t {
    std::function<void(int)> on_exit;
    int exit_code = 0;
    bool teardown_done = false;
  };
  std::shared_ptr<fate_t> fate = std::make_shared<fate_t>();

  // -- lifecycle ---------------------------------------------------------------
  void start();
  void connect();
  void on_connected(uint64_t g, caf::actor c);
  void on_connect_failed(uint64_t g, const std::string& reason);
  void on_frames(uint64_t g, const std::vector<char>& bytes);
  void on_disconnected(uint64_t g, const std::string& reason);
  void handle_disconnect(std::string code, std::string reason,
                         std::chrono::milliseconds at_least = std::chrono::milliseconds{0},
                         std::chrono::milliseconds hint = std::chrono::milliseconds{0},
                         const std::vector<std::string>& reconnect_to = {});
  /// Stops the agent: no reconnect from now on; `stop_now` follows as a
  /// message of its own (requests fail, teardown, tasks end, Goodbye).
  void stop(int code);
  void stop_now();
  /// Requests fail (stopped), teardown() runs once, every task ends.
  void end_agent_code(const char* request_text, const char* task_text);
  void arm_stop_deadline();
  void finish();
  /// An exception escaped an unguarded handler: stop synchronously.
  void abort(const std::string& what);
  ~agent_core();

  // -- protocol ----------------------------------------------------------------
  void handle_frame(v1::Frame& f);
  void handle_welcome(const v1::Welcome& w);
  void handle_delivery(v1::Delivery& d);
  void handle_notice(const v1::Notice& n);
  void handle_agent_list(v1::AgentList& l);
  void handle_trace_events(const v1::TraceEvents& t);
  bool write(const v1::Frame& f);
  std::error_code send_envelope(std::string_view recipient, std::string_view route,
                                std::string_view payload, const send_options& opts,
                                uint64_t request_id, uint64_t in_reply_to);
  void send_subscription(bool subscribe, const std::string& route);
  /// Registers (or replaces) the handler of a route or pattern.
  void set_route_handler(const std::string& route, agent::message_handler handler);
  void erase_route_handler(const std::string& route);
  /// The handler for a delivery on `route`: exact first, then patterns;
  /// null if none.
  const agent::message_handler* route_handler(const std::string& route) const;

  // -- agent code ----------------------------------------------------------------
  /// Runs agent code, reporting exceptions to on_error. False if it threw.
  bool guarded(const std::string& where, const std::function<void()>& fn);
  /// Runs agent code; returns the text of what it threw, if it threw.
  std::optional<std::string> catching(const std::function<void()>& fn);
  void report_error(const std::string& where, const std::string& what, bool count = true);
  void fail_requests(errc code, const std::string& text);
  task_registry& registry() {
    return user->tasks();
  }

  // -- tasks -------------------------------------------------------------------
  void start_timer(std::shared_ptr<task_cell<void>> cell, duration interval,
                   std::function<void()> fn, bool periodic);
  void on_timer(task_id id);
  void start_worker(const std::shared_ptr<task_cell_base>& cell, bool blocking,
                    std::function<void(const cancel_token&)> work,
                    std::function<void(child_core*)> child,
                    std::function<void(const std::string&)> finish);
  void on_worker_done(task_id id, const std::string& failure);
  /// A child task is gone (its cancellation, if held, is delivered).
  void child_gone(task_id id);

  /// The agent's handle for other threads (agent_core is a friend of agent).
  static std::shared_ptr<agent_handle>& handle_of(agent& a) {
    return a.handle_;
  }
  static session_info& session_of(agent& a) {
    return a.session_;
  }
  static agent_stats& stats_of(agent& a) {
    return a.stats_;
  }
  static const std::string& requested_name(agent& a) {
    return a.requested_name_;
  }
  static agent_core*& core_of(agent& a) {
    return a.core_;
  }
  static std::vector<std::string>& initial_routes_of(agent& a) {
    return a.initial_routes_;
  }
  static auto& initial_handlers_of(agent& a) {
    return a.initial_handlers_;
  }
  static auto& waiting_starts_of(agent& a) {
    return a.waiting_starts_;
  }
};

/// Spawns a child task's actor, linked to the agent's actor `parent`; it
/// reports its end to the parent as job_done_atom(id, failure).
caf::actor spawn_child(caf::event_based_actor& parent, task_id id,
                       std::function<void(child_core*)> body);

/// Spawns the actor that runs `a`; `on_exit(code)` is called when it ends.
caf::actor spawn_agent(caf::actor_system& sys, agent& a, client_options opts,
                       std::function<void(int)> on_exit);

/// Starts a connection broker on the connected socket `fd` for `agent`;
/// with `tls_ctx` it speaks TLS (null: plaintext).
caf::actor spawn_connection(caf::actor_system& sys, int fd, caf::actor agent, uint64_t gen,
                            uint64_t window, std::shared_ptr<std::atomic<uint64_t>> out_pending,
                            tls::context_ptr tls_ctx);

/// The TLS context for connecting to `to`: null without TLS, else the CA,
/// client certificate and server name of `opts` (default: the host of `to`)
/// as a client context; an error names the file that cannot be used.
expected<tls::context_ptr> make_tls_context(const client_options& opts, const server_address& to);

/// Spawns a detached actor that connects to `to` and, on success, starts a
/// connection broker for `agent` (reported as connected_atom).
void spawn_connector(caf::actor_system& sys, const client_options& opts, server_address to,
                     caf::actor agent, uint64_t gen,
                     std::shared_ptr<std::atomic<uint64_t>> out_pending);

} // namespace convoke::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::detail::closure)
