#pragma once

// Shared, CAF-free state of one running server: configuration, counters,
// the message id sequence, the trace writer and the loggers. Every actor of
// the server holds a shared_ptr to it. Only atomics are written after start,
// except the rate limit registry, which only the multiplexer thread uses.

#include <atomic>
#include <memory>
#include <mutex>

#include <spdlog/logger.h>

#include "authenticator.hpp"
#include "cluster_rules.hpp"
#include "convoke/server/config.hpp"
#include "convoke/server/stats.hpp"
#include "convoke/tls/tls.hpp"
#include "rate_limits.hpp"
#include "session_registry.hpp"
#include "trace.hpp"
#include "trace_tap.hpp"

namespace convoke::server {

struct counters {
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> connections_open{0};
  std::atomic<uint64_t> agents{0};
  std::atomic<uint64_t> messages_in{0};
  /// Bytes of the envelopes accepted, and of the deliveries written.
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> deliveries{0};
  std::atomic<uint64_t> undeliverable{0};
  std::atomic<uint64_t> rejected{0};
  std::atomic<uint64_t> dropped{0};
  std::atomic<uint64_t> slow_consumers{0};
  std::atomic<uint64_t> protocol_errors{0};
  std::atomic<uint64_t> timeouts{0};
  std::atomic<uint64_t> input_pauses{0};
  std::atomic<uint64_t> accept_errors{0};
  /// Bytes all sessions hold now (limits.max-buffered-bytes), and how often
  /// the limit cut a slow reader or paused reading.
  std::atomic<uint64_t> buffered_bytes{0};
  std::atomic<uint64_t> budget_exceeded{0};
  std::atomic<uint64_t> budget_pauses{0};
  std::atomic<uint64_t> handshakes_evicted{0};
  /// Capacity of large output buffers given back after a backlog was
  /// written (the main thread returns it to the OS, see server.cpp).
  std::atomic<uint64_t> released_bytes{0};
  /// Logins refused (wrong identity or token) and actions an identity's
  /// rights refused.
  std::atomic<uint64_t> auth_failures{0};
  std::atomic<uint64_t> auth_throttled{0};
  std::atomic<uint64_t> permission_denied{0};
  std::atomic<uint64_t> rate_limited{0};
  std::atomic<uint64_t> quarantines{0};
  std::atomic<uint64_t> quarantine_refused{0};
  std::atomic<uint64_t> too_many_connections{0};
  /// TLS handshakes that failed, connections that were not TLS on a TLS
  /// port, TLS errors after the handshake.
  std::atomic<uint64_t> tls_failures{0};
  /// Cluster: messages sent to other nodes (once per node), received from
  /// them, and dropped for a node over cluster.max-pending-bytes.
  std::atomic<uint64_t> cluster_sent{0};
  std::atomic<uint64_t> cluster_received{0};
  std::atomic<uint64_t> cluster_dropped{0};
};

inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);
}

struct server_context {
  /// The configuration the server started with. Keys that a reload
  /// (SIGHUP) may change must be read from config() instead: a session
  /// keeps the snapshot it started with (session_state::cfg).
  server_config cfg;
  counters stats;
  /// Next relayed message id (ids start at 1; 0 means "none" on the wire).
  std::atomic<uint64_t> next_message_id{1};
  /// Set by server::shutdown(): the steady-clock time (ns since the clock's
  /// epoch) by which every session must have closed; 0 while running.
  std::atomic<int64_t> close_deadline_ns{0};
  /// Set by server::lame_duck() (SIGUSR2): the server stopped accepting and
  /// closes its agents over lame-duck.duration. Never cleared; a shutdown
  /// may follow (it then takes over: the normal fast drain).
  std::atomic<bool> lame_duck{false};
  /// Set by the router once lame duck has closed every agent (the server
  /// then drains what is left and stops; run() returns 0).
  std::atomic<bool> lame_duck_done{false};
  /// Set when the server stops accepting (shutdown, lame duck): /readyz
  /// then answers 503.
  std::atomic<bool> draining{false};
  /// Connected agents and the relay's histograms, for the admin listener.
  session_registry registry;
  /// Steady-clock ns of the last "above limits.max-buffered-bytes" log line.
  std::atomic<int64_t> budget_logged_ns{0};
  /// Steady-clock ns of the last request to shed (see session.cpp).
  std::atomic<int64_t> shed_requested_ns{0};
  /// alive_atom messages the router handled (the watchdog's evidence that
  /// the relay thread runs).
  std::atomic<uint64_t> relay_answers{0};
  /// Checks identities' tokens; null without auth.credentials.
  std::unique_ptr<authenticator> auth;
  /// Failed logins by address. Multiplexer thread only (sessions).
  login_throttle throttle{10, std::chrono::seconds{60}};
  /// Rate limits and quarantine by principal (the server-wide defaults are
  /// in each session's config). Not atomic: only brokers use them, and all
  /// of them run on CAF's one multiplexer thread (see rate_limits.hpp).
  rate_limits principals;
  /// principals.evicted(), for snapshot() from other threads.
  std::atomic<uint64_t> principals_evicted{0};
  /// The live trace tap (Observe, the web view): always there, also with
  /// tracing disabled. Its events come from the trace writer's thread.
  /// Declared before `trace`, so that the writer (its caller) goes first.
  std::shared_ptr<trace_tap> tap;
  std::unique_ptr<trace_writer> trace;
  std::shared_ptr<spdlog::logger> log_server;
  std::shared_ptr<spdlog::logger> log_session;
  std::shared_ptr<spdlog::logger> log_router;

  /// The TLS context new sessions start with (null: plaintext). Replaced on
  /// reload (SIGHUP); a session keeps the one it started with.
  tls::context_ptr tls_context() const {
    std::lock_guard lock{tls_mutex};
    return tls;
  }
  void set_tls_context(tls::context_ptr c) {
    std::lock_guard lock{tls_mutex};
    tls = std::move(c);
  }

  /// The configuration in force: the start's, then each reload's. New
  /// sessions take it once (never per message: it costs a mutex).
  std::shared_ptr<const server_config> config() const {
    std::lock_guard lock{config_mutex};
    return live;
  }

  /// Publishes a reloaded configuration (main thread). The multiplexer's
  /// own state follows at the next connection (sync_multiplexer_state).
  void publish(std::shared_ptr<const server_config> next) {
    std::lock_guard lock{config_mutex};
    live = std::move(next);
    config_generation.fetch_add(1, std::memory_order_release);
  }

  /// Multiplexer thread (the listener, at each new connection): applies a
  /// published configuration to the state that only that thread touches
  /// (failed-login throttle, idle principals); one atomic load otherwise.
  void sync_multiplexer_state() {
    if (config_generation.load(std::memory_order_acquire) == applied_generation)
      return;
    std::shared_ptr<const server_config> c;
    {
      std::lock_guard lock{config_mutex};
      c = live;
      applied_generation = config_generation.load(std::memory_order_relaxed);
    }
    throttle.set_limits(c->failed_login_limit, c->failed_login_window);
    principals.set_max_idle(c->max_idle_principals);
  }

  server_stats snapshot() const;

  /// Cluster (docs/cluster.md): this node's name; empty without a cluster.
  std::string node_name;
  /// The cluster as the router sees it (router writes, admin reads).
  cluster_status cluster_view() const {
    std::lock_guard lock{cluster_mutex};
    return cluster;
  }
  void set_cluster_view(cluster_status c) {
    std::lock_guard lock{cluster_mutex};
    cluster = std::move(c);
  }
  /// The client addresses of the other live nodes (Goodbye.reconnect_to).
  std::vector<std::string> reconnect_hints() const {
    std::lock_guard lock{cluster_mutex};
    std::vector<std::string> out;
    for (auto& p : cluster.peers)
      if (!p.client_addr.empty() && !p.leaving && out.size() < 16)
        out.push_back(p.client_addr);
    return out;
  }

private:
  mutable std::mutex cluster_mutex;
  cluster_status cluster;
  mutable std::mutex tls_mutex;
  tls::context_ptr tls;
  mutable std::mutex config_mutex;
  std::shared_ptr<const server_config> live = std::make_shared<const server_config>();
  std::atomic<uint64_t> config_generation{0};
  /// The generation the multiplexer's state follows (that thread only).
  uint64_t applied_generation = 0;
};

using context_ptr = std::shared_ptr<server_context>;

} // namespace convoke::server
