#pragma once

/// @file
/// Counters a running server exposes (a snapshot; see `server::stats()`).

#include <cstdint>

namespace convoke::server {

struct server_stats {
  /// Connections accepted since start.
  uint64_t connections_total = 0;
  /// Connections open now (any phase, handshaking included).
  uint64_t connections_open = 0;
  /// Agents past the handshake now.
  uint64_t agents = 0;
  /// Envelopes accepted from agents.
  uint64_t messages_in = 0;
  /// Bytes of the envelopes accepted (frames as sent) and of the deliveries
  /// written to agents.
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  /// Envelope copies queued to agents (one broadcast to 10 agents counts 10).
  uint64_t deliveries = 0;
  /// Direct messages whose recipient was not connected.
  uint64_t undeliverable = 0;
  /// Envelopes not relayed because of an invalid recipient or route.
  uint64_t rejected = 0;
  /// Deliveries never written to their receiver: dropped for a slow consumer
  /// (drop policy), the backlog of a connection that closed or was cut off,
  /// or still queued at the shutdown deadline. Each has a trace record.
  uint64_t dropped = 0;
  /// Sessions closed as slow consumers (disconnect policy).
  uint64_t slow_consumers = 0;
  /// Sessions closed for protocol violations (bad frames, no Hello, ...).
  uint64_t protocol_errors = 0;
  /// Sessions closed by the idle or handshake timeout.
  uint64_t timeouts = 0;
  /// Times a session stopped reading because its input window was full.
  uint64_t input_pauses = 0;
  /// Bytes held for all connections now: output waiting for slow readers,
  /// input waiting to be routed, partial frames (limits.max-buffered-bytes).
  uint64_t buffered_bytes = 0;
  /// Readers treated as slow consumers because the server was above
  /// limits.max-buffered-bytes while they had a backlog.
  uint64_t budget_exceeded = 0;
  /// Times a session paused reading because of limits.max-buffered-bytes.
  uint64_t budget_pauses = 0;
  /// Capacity of large output buffers given back once their backlog had been
  /// written (the server then returns such memory to the operating system).
  uint64_t released_bytes = 0;
  /// accept() failures for lack of resources (descriptor limit, memory).
  uint64_t accept_errors = 0;
  /// Connections closed (server_busy) to make room under
  /// limits.max-handshakes.
  uint64_t handshakes_evicted = 0;
  /// Logins refused: unknown identity or wrong token (auth.credentials),
  /// or a wrong shared token (auth.token).
  uint64_t auth_failures = 0;
  /// Logins refused at once because their address failed too often
  /// (auth.failed-login-limit).
  uint64_t auth_throttled = 0;
  /// Actions an identity's rights refused (publish, subscribe, send,
  /// receive, agent name).
  uint64_t permission_denied = 0;
  /// Envelopes not relayed because their principal was over
  /// limits.messages-per-second or limits.bytes-per-second, or quarantined.
  uint64_t rate_limited = 0;
  /// Principals quarantined (limits.quarantine-after breaches).
  uint64_t quarantines = 0;
  /// Hellos refused because their principal was quarantined.
  uint64_t quarantine_refused = 0;
  /// Connections refused by limits.max-connections-per-address.
  uint64_t too_many_connections = 0;
  /// Principals forgotten before their state was stale, over
  /// limits.max-idle-principals.
  uint64_t principals_evicted = 0;
  /// Connections closed for TLS: failed handshakes (untrusted or expired
  /// client certificates, garbage), handshakes not finished within
  /// timeouts.handshake (also in `timeouts`), plaintext sent to a TLS port,
  /// TLS errors after the handshake.
  uint64_t tls_failures = 0;
  /// Cluster: messages sent to other nodes (once per node), received from
  /// them, and dropped for a node over cluster.max-pending-bytes.
  uint64_t cluster_sent = 0;
  uint64_t cluster_received = 0;
  uint64_t cluster_dropped = 0;
  /// Trace records written / dropped because the trace queue was full.
  uint64_t trace_written = 0;
  uint64_t trace_dropped = 0;
};

} // namespace convoke::server
