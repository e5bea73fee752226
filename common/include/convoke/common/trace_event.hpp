#pragma once

/// @file
/// A message trace event as people and tools see it: what the server's
/// trace writer formats into trace files (text or JSON lines), what the live
/// tap sends to observers (TraceEvent frames), what `convoke trace` reads
/// back and what the web view shows. CAF-free, shared by server and CLI.
///
/// On the relay thread the server records compact binary records instead
/// (server/src/trace_record.hpp); the trace writer's thread decodes them
/// into this struct. docs/observing.md describes every field and kind.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace convoke::trace {

enum class kind : uint8_t {
  /// A message accepted from its sender and routed: `count` receivers
  /// (`recipient` for a direct message, `audience` for a broadcast).
  relay,
  /// A direct message to no connected agent, or over the sender's rate
  /// limit (`reason`); with count > 1, a summary of ids
  /// message_id..last_message_id whose records were rate-limited.
  undeliverable,
  /// Messages queued for `recipient` but not written to it: ids
  /// message_id..last_message_id, `count` of them, `reason`.
  dropped,
  /// Refused by policy (the sender's rights), never relayed.
  rejected,
  /// A message written to one recipient's socket (opt-in: trace.written).
  written,
  /// Trace records lost before the writer saw them (`count`, `reason`):
  /// the recording budget was exceeded. Seen in files and by observers.
  gap,
  /// An agent joined (`sender` = its name, `route` = its address,
  /// `reason` = its identity) or left (`reason` = why).
  joined,
  left,
  /// The definition of an audience: the agents (`recipients`) a broadcast
  /// with this `audience` number reached. Written once before the first
  /// record that refers to it (and again after a file rotation).
  audience,
};

/// "relay", "undeliverable", ... ; "event" for an unknown value.
std::string_view to_string(kind k) noexcept;
/// The inverse of to_string; nullopt for an unknown name.
std::optional<kind> kind_from_string(std::string_view name) noexcept;

struct event {
  kind what = kind::relay;
  /// Position in this server boot's sequence of events (1, 2, ...): gaps
  /// in it are lost events. Assigned by the trace writer.
  uint64_t seq = 0;
  /// The server boot that wrote it: 16 hex digits, random per start.
  /// (boot, message_id) is unique across restarts.
  std::string boot;
  /// When it happened (unix ns): routed, written, dropped, ...
  int64_t ts_ns = 0;
  uint64_t message_id = 0;
  /// Ranges (dropped, undeliverable summaries): the last id.
  uint64_t last_message_id = 0;
  std::string sender;
  /// Direct recipient; empty for a broadcast.
  std::string recipient;
  std::string route;
  /// Receivers (relay), messages (dropped, summaries), records lost (gap).
  uint32_t count = 0;
  /// Broadcast audience number (0: none); see kind::audience.
  uint64_t audience = 0;
  /// Every receiver of a broadcast, when resolved (the audience's agents).
  std::vector<std::string> recipients;
  uint32_t payload_bytes = 0;
  /// The sender's clock when it sent the message (0 if it did not say).
  int64_t sent_ns = 0;
  /// When the server accepted (read) it.
  int64_t accepted_ns = 0;
  /// Raw trace id bytes (W3C: 16 bytes; printed as hex).
  std::string trace_id;
  /// W3C parent span id from the envelope's `traceparent` header (8 bytes).
  std::string span_id;
  uint64_t request_id = 0;
  uint64_t in_reply_to = 0;
  /// Payload excerpt, when recorded (trace.payload-bytes, or an observer
  /// that asked for payloads and may see them).
  std::string payload;
  bool payload_truncated = false;
  /// Why (undeliverable, dropped, rejected, gap, left); codes as in
  /// docs/protocol.md, e.g. unknown_recipient, slow_consumer.
  std::string reason;
  /// joined / left: the agent's name is `sender`; these say where from.
  std::string address;
  std::string identity;
  /// Cluster (docs/cluster.md): the nodes the message crossed, "a>b,c" on
  /// the node it came from, "a>b" on a node it reached.
  std::string nodes;
};

/// One human-readable line (no newline).
std::string format_text(const event& ev);
/// Appends the line to `out` (the writer's fast path).
void append_text(std::string& out, const event& ev);

/// One JSON object (no newline); the format of JSON trace files.
std::string format_json(const event& ev);
void append_json(std::string& out, const event& ev);

/// Parses one JSON trace line (as written by format_json). The error text
/// says what is wrong ("not JSON", "no 'event' field", ...).
struct parse_result {
  std::optional<event> ev;
  std::string error;
};
parse_result parse_json(std::string_view line);

} // namespace convoke::trace
