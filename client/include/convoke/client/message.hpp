#pragma once

/// @file
/// Value types exchanged between the SDK and agent code.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "convoke/common/error.hpp"

namespace convoke {

/// A message delivered to an agent.
struct message {
  /// Server-assigned id, unique within one server run.
  uint64_t id = 0;
  /// Name of the sending agent (set by the server, cannot be spoofed).
  std::string sender;
  /// The recipient for direct messages; empty for broadcasts.
  std::string recipient;
  /// Route label; empty if none.
  std::string route;
  /// Application data (any bytes).
  std::string payload;
  /// Media type of the payload, e.g. "text/plain" (may be empty).
  std::string content_type;
  /// Application headers.
  std::map<std::string, std::string> headers;
  /// Trace id as 32 lower-case hex characters (empty if the sender set none).
  std::string trace_id;
  /// Sender's and server's clocks, Unix epoch nanoseconds.
  int64_t sent_unix_nanos = 0;
  int64_t relayed_unix_nanos = 0;
  /// Nonzero if the sender expects a reply (answer with `agent::reply`).
  uint64_t request_id = 0;
  /// Nonzero if this is a reply to one of this agent's requests.
  uint64_t in_reply_to = 0;

  bool is_direct() const noexcept {
    return !recipient.empty();
  }
  bool is_request() const noexcept {
    return request_id != 0;
  }
};

/// Optional parts of an outgoing message.
struct send_options {
  std::string content_type;
  std::map<std::string, std::string> headers;
  /// Continue an existing trace (32 hex characters); empty starts a new one,
  /// or continues the one of a W3C `traceparent` entry in `headers` (as
  /// OpenTelemetry propagates it), which travels unchanged.
  std::string trace_id;
};

/// A diagnostic from the server (e.g. "unknown_recipient").
struct notice {
  enum class level { info, warning, error };
  level severity = level::info;
  /// Stable machine-readable code; docs/protocol.md lists them.
  std::string code;
  /// Human-readable explanation.
  std::string text;
  /// Identify the message the notice is about, when there is one.
  uint64_t client_seq = 0;
  uint64_t message_id = 0;
  uint64_t request_id = 0;
  /// When to try again (`rate_limited`, `quarantined`); 0 if not said. After
  /// a refusal that says it, the SDK reconnects no sooner than this.
  std::chrono::milliseconds retry_after{0};
};

/// Facts about the current session, passed to `agent::on_connect`.
struct session_info {
  uint64_t session_id = 0;
  /// The confirmed agent name.
  std::string agent_name;
  std::string server_name;
  std::string server_version;
  std::chrono::milliseconds heartbeat_interval{0};
  std::chrono::milliseconds idle_timeout{0};
  /// Largest frame the agent may send (an encoded message); bigger sends
  /// fail with errc::message_too_large.
  uint32_t max_frame_bytes = 0;
  /// Largest frame the server will send to the agent.
  uint32_t max_delivery_bytes = 0;
  /// True if this session replaces an earlier one of this agent.
  bool reconnected = false;
  /// The address connected to ("host:port", "tls://host:port"): one of
  /// `client_options`' servers, or one a server sent the agent to.
  std::string server;
  /// Optional requests the server answers ("list_agents").
  std::vector<std::string> features;

  bool has_feature(std::string_view name) const noexcept {
    for (auto& f : features)
      if (f == name)
        return true;
    return false;
  }
};

/// One page of connected agents' names (`agent::list_agents`).
struct agent_list {
  /// Sorted bytewise.
  std::vector<std::string> names;
  /// More names match: ask again with `list_options::after` = names.back().
  bool truncated = false;
};

/// Paging and timeout of `agent::list_agents`.
struct list_options {
  /// Only names sorted after this one (the last name of the previous page).
  std::string after;
  /// At most this many names (0: the server's cap, 1000).
  uint32_t limit = 0;
  std::chrono::milliseconds timeout{10000};
};

/// What `agent::observe` watches. Every non-empty field narrows (AND);
/// within a list any entry matches. Bad values fail the task with
/// `refused` and the server's reason ("invalid_filter: unknown event kind
/// 'x' ...").
struct observe_options {
  /// Exact agent names: events where one of them is the sender, the direct
  /// recipient or in the audience of a broadcast.
  std::vector<std::string> agents;
  /// Routes or patterns ("weather.*", "tasks.>").
  std::vector<std::string> routes;
  /// A trace id as hex (32 characters, like `message::trace_id`; the
  /// events' `trace_id` are raw bytes).
  std::string trace_id;
  /// Event kinds by name ("relay", "dropped", "undeliverable", "rejected",
  /// ...); empty: all but "audience" (audience definitions come anyway,
  /// before the first broadcast that refers to them).
  std::vector<std::string> events;
  /// Payload bytes wanted per event (0: none). Only given with the
  /// `payload` observe right, and only as much as the server recorded.
  uint32_t payload_bytes = 0;
  /// Called once the server applies the filter: events from then on are
  /// seen (optional).
  std::function<void()> on_started;
};

/// Why a session ended, passed to `agent::on_disconnect`.
struct disconnect_info {
  /// A Goodbye or Notice code from the server ("shutdown", "idle_timeout",
  /// ...) or a local one ("connect_failed", "connection_lost", "stopped").
  std::string code;
  std::string reason;
  /// The server this was about ("host:port", "tls://host:port").
  std::string server;
  /// True if the SDK will try to connect again after `retry_in`, to
  /// `next_server`.
  bool will_reconnect = false;
  std::chrono::milliseconds retry_in{0};
  std::string next_server;
  /// Consecutive failed attempts so far (0 after a session that worked).
  int attempt = 0;
  /// Every server of the current round has failed now (always true with
  /// one server): the backoff applies before the next round.
  bool round_failed = false;
  /// The server's reconnect hint (its Goodbye's `reconnect_after_ms`, e.g.
  /// with code "lame_duck": the server is going away and spreads the
  /// reconnects of its agents); 0 = none. With a hint, `retry_in` is the
  /// hint instead of the reconnect policy's backoff.
  std::chrono::milliseconds reconnect_hint{0};
  /// The servers the server sent the agent to (its Goodbye's
  /// `reconnect_to`) that the SDK accepted and tries first, in order; and
  /// how many it ignored (a wrong scheme, malformed, beyond the first 16).
  std::vector<std::string> reconnect_to;
  int reconnect_to_ignored = 0;
};

/// An exception or failure in agent code, passed to `agent::on_error`.
struct error_info {
  /// Where it happened: "setup", "on_message", "task 'heartbeat'", ...
  std::string where;
  std::string what;
};

/// Why a request failed (kept for older code; it is `convoke::error`).
using request_error = error;

} // namespace convoke
