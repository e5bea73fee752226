#pragma once

/// @file
/// An embeddable Convoke server. `convoke-server` is a thin `main()` around
/// `run()`; tests and examples start servers in-process with `server`.
/// No CAF types appear here.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "convoke/common/error.hpp"
#include "convoke/server/config.hpp"
#include "convoke/server/error.hpp"
#include "convoke/server/stats.hpp"

namespace convoke::server {

class server {
public:
  explicit server(server_config cfg);

  /// Shuts down (gracefully) if still running.
  ~server();

  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds the listening socket and starts the actors. Errors:
  /// `errc::bind_failed` ("cannot listen on host:port: Address already in
  /// use"), `errc::resolve_failed`, `errc::unwritable_file` (the trace file),
  /// the code of the first `validate()` problem ("invalid configuration:
  /// ..."), `errc::already_started`.
  expected<> start();

  /// The bound TCP port (meaningful after a successful `start()`).
  uint16_t port() const noexcept;

  /// The admin listener's port (0 if admin.enabled is false).
  uint16_t admin_port() const noexcept;

  /// The Summoner compatibility listener's port (0 if summoner.listen is
  /// empty).
  uint16_t summoner_port() const noexcept;

  /// The cluster port (cluster.listen; 0 without cluster.name).
  uint16_t cluster_port() const noexcept;

  /// Starts the graceful shutdown: stop accepting, flush what was already
  /// read to its receivers, send Goodbye to every agent, close. Thread-safe
  /// and idempotent.
  void shutdown();

  /// Lame-duck mode (as NATS has it; SIGUSR2 in `run()`): stops accepting
  /// at once (the listening socket is closed), waits `lame-duck.grace`,
  /// then closes the agents spread evenly over the rest of
  /// `lame-duck.duration`. Each close is graceful like the shutdown's:
  /// the agent's input read so far is routed and what was routed to it is
  /// written, then `Goodbye(lame_duck)` with a jittered
  /// `reconnect_after_ms`. Once every agent is gone the server stops on its
  /// own (`wait()` returns, `lame_duck_finished()` is true). A `shutdown()`
  /// meanwhile takes over with the normal fast drain. Thread-safe and
  /// idempotent; ignored after `shutdown()`.
  void lame_duck();

  /// True from `lame_duck()` or `shutdown()` on: the server takes no new
  /// connections and is sending its agents away. A readiness probe
  /// (/readyz) reports "not ready" while it is true, so that load
  /// balancers stop sending agents here. Thread-safe.
  bool draining() const noexcept;

  /// True once lame-duck mode has closed every agent (the server is then
  /// stopping by itself). Thread-safe.
  bool lame_duck_finished() const noexcept;

  /// Blocks until every actor of the server has stopped. Bounded by
  /// `timeouts.drain` once `shutdown()` was called.
  void wait();

  /// Writes the trace records queued so far, waiting at most `limit` (for
  /// exits that cannot wait for the drain). Thread-safe.
  void flush_traces(std::chrono::milliseconds limit);

  /// Counters, readable at any time from any thread.
  server_stats stats() const;

  /// Loads the [tls] files again (SIGHUP): new connections use them,
  /// existing ones keep the certificate they started with. On an error
  /// (unreadable or mismatched files, TLS off) the previous context stays.
  /// Returns a description of the new certificate.
  expected<std::string> reload_tls();

  /// Reads auth.credentials again: later logins use the new identities
  /// (connected agents keep the rights they logged in with). A file with
  /// problems keeps the old identities; the error lists every problem.
  /// Returns the number of identities.
  expected<size_t> reload_credentials();

  /// Applies a configuration read again (SIGHUP, `reread_config`): the
  /// keys that can change while running (`reloadable`, docs/signals.md)
  /// are published for what starts from now on (sessions, logins,
  /// connections); the others keep their running values until a restart.
  /// Logging is the caller's (log.level, log.format: `logging::set_level`).
  /// If the result has errors, nothing changed. Thread-safe.
  struct reload_result {
    std::vector<config_change> changes;
    std::vector<error> errors;
  };
  reload_result reload_config(const server_config& read);

  /// Opens the trace file again by its path (SIGUSR1); see
  /// `trace_writer::reopen`. False if tracing is off.
  bool reopen_trace();

  /// The watchdog's question to the relay (multiplexer) thread: true if it
  /// answered the previous call's request, then asks again. The first call
  /// is true.
  bool relay_alive();

  /// The configuration the server started with.
  const server_config& config() const noexcept;

  /// The configuration in force now (the start's, or the last reload's).
  std::shared_ptr<const server_config> current_config() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The server program: configures logging, starts the server, writes the
/// port file, tells systemd it is ready, waits for signals and returns the
/// exit code: after the drain (SIGINT/SIGTERM), or after lame duck (SIGUSR2,
/// exit 0). SIGHUP reloads (the configuration from `args`, the command line
/// it was parsed from, with the same file and environment; without `args`
/// only the TLS and credentials files), SIGUSR1 reopens the log and trace
/// files.
int run(server_config cfg, std::vector<std::string> args = {});

} // namespace convoke::server
