#pragma once

/// @file
/// Protocol rules shared by server and clients: what a valid agent name and
/// route look like, and the stable codes carried by `Notice` and `Goodbye`.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "convoke/common/error.hpp"

namespace convoke::proto {

/// Why a name or route breaks the rules (category "convoke.proto").
enum class errc : uint8_t {
  /// The agent name is empty.
  name_empty = 1,
  /// The agent name is longer than `max_name_length` bytes.
  name_too_long,
  /// The agent name has a character outside [A-Za-z0-9._:@-].
  name_invalid_character,
  /// The route is empty.
  route_empty,
  /// The route is longer than `max_route_length` bytes.
  route_too_long,
  /// The route has a space, control or non-ASCII character.
  route_invalid_character,
  /// The route has an empty token (leading, trailing or double '.').
  route_empty_token,
  /// A published route has a "*" or ">" token: patterns are only for
  /// subscriptions.
  route_is_pattern,
  /// A subscription pattern has ">" before its last token.
  route_tail_not_last,
};

/// The "convoke.proto" error category.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Stable name of a code ("name_empty", "route_too_long", ...).
std::string_view to_string(errc e) noexcept;

/// Longest agent name, in bytes.
inline constexpr size_t max_name_length = 64;

/// Longest route, in bytes.
inline constexpr size_t max_route_length = 128;

/// Longest role label, in bytes.
inline constexpr size_t max_role_length = 64;

/// Checks that `name` is a valid agent name (1-64 characters from
/// [A-Za-z0-9._:@-]). The error has a `name_*` code and a sentence saying
/// what is wrong (quoting the name, escaped with `printable`). Allocates
/// nothing when the name is valid.
expected<> check_agent_name(std::string_view name);

/// Checks that `route` is a valid concrete route, the kind an Envelope is
/// published on: 1-128 printable ASCII characters, no spaces, tokens
/// separated by '.' none of which is empty or exactly "*" or ">" (see
/// subject.hpp). The error has a `route_*` code and a sentence. Allocates
/// nothing when the route is valid.
expected<> check_route(std::string_view route);

/// Checks that `route` is a valid subscription: a concrete route, or a
/// pattern where a "*" token matches one token and a ">" token, only as the
/// last token, matches one or more. Same errors as `check_route`, plus
/// `route_tail_not_last`. Allocates nothing when the route is valid.
expected<> check_route_pattern(std::string_view route);

/// Renders arbitrary bytes for a log line: printable ASCII kept, the rest
/// escaped as \xNN, cut after `max` input bytes with a "..." marker.
std::string printable(std::string_view bytes, size_t max = 64);

/// Stable codes used in `Notice.code` and `Goodbye.code`.
namespace codes {
// Framing and protocol errors (ERROR severity, connection closed).
inline constexpr std::string_view frame_empty = "frame_empty";
inline constexpr std::string_view frame_too_large = "frame_too_large";
inline constexpr std::string_view frame_undecodable = "frame_undecodable";
inline constexpr std::string_view frame_without_kind = "frame_without_kind";
inline constexpr std::string_view hello_required = "hello_required";
inline constexpr std::string_view duplicate_hello = "duplicate_hello";
inline constexpr std::string_view unexpected_frame = "unexpected_frame";
inline constexpr std::string_view handshake_timeout = "handshake_timeout";
inline constexpr std::string_view unsupported_version = "unsupported_version";
inline constexpr std::string_view invalid_name = "invalid_name";
inline constexpr std::string_view invalid_route = "invalid_route";
inline constexpr std::string_view name_taken = "name_taken";
inline constexpr std::string_view auth_failed = "auth_failed";
inline constexpr std::string_view auth_throttled = "auth_throttled";
inline constexpr std::string_view too_many_routes = "too_many_routes";
inline constexpr std::string_view server_full = "server_full";
inline constexpr std::string_view server_busy = "server_busy";
inline constexpr std::string_view idle_timeout = "idle_timeout";
inline constexpr std::string_view frame_timeout = "frame_timeout";
inline constexpr std::string_view slow_consumer = "slow_consumer";
inline constexpr std::string_view quarantined = "quarantined";
inline constexpr std::string_view too_many_connections = "too_many_connections";
/// Plaintext sent to a TLS port; this Notice is the only plaintext frame
/// such a port sends.
inline constexpr std::string_view tls_required = "tls_required";
// Per-message problems (WARNING severity, connection kept).
inline constexpr std::string_view unknown_recipient = "unknown_recipient";
inline constexpr std::string_view invalid_recipient = "invalid_recipient";
inline constexpr std::string_view message_too_large = "message_too_large";
inline constexpr std::string_view messages_dropped = "messages_dropped";
/// Summoner compatibility listener: a line that is not UTF-8 (not relayed).
inline constexpr std::string_view invalid_utf8 = "invalid_utf8";
inline constexpr std::string_view notices_suppressed = "notices_suppressed";
// An identity's rights forbid the action (WARNING; ERROR for a name in Hello).
inline constexpr std::string_view permission_denied = "permission_denied";
inline constexpr std::string_view rate_limited = "rate_limited";
/// An Observe's filter is not valid (WARNING, with its request_id).
inline constexpr std::string_view invalid_filter = "invalid_filter";
/// trace.max-observers connections observe already (WARNING, request_id).
inline constexpr std::string_view too_many_observers = "too_many_observers";
/// Cluster: another node became unreachable; its agents left the
/// namespace (INFO; the text names the node and how many agents).
inline constexpr std::string_view node_lost = "node_lost";
/// Cluster: a relayed message could not cross to another node (that node
/// is slow or unreachable) and was dropped (WARNING, to its sender).
inline constexpr std::string_view node_unreachable = "node_unreachable";
// Goodbye codes.
inline constexpr std::string_view shutdown = "shutdown";
inline constexpr std::string_view client_exit = "client_exit";
inline constexpr std::string_view replaced = "replaced";
/// The server is in lame-duck mode (going away): the Goodbye carries
/// `reconnect_after_ms`.
inline constexpr std::string_view lame_duck = "lame_duck";
/// Cluster: two nodes accepted the same agent name (during a partition, or
/// at the same instant); this connection lost (docs/cluster.md says which
/// wins) and is closed.
inline constexpr std::string_view name_conflict = "name_conflict";
} // namespace codes

} // namespace convoke::proto

template <>
struct std::is_error_code_enum<convoke::proto::errc> : std::true_type {};
