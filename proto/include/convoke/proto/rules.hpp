#pragma once

/// @file
/// Protocol rules shared by server and clients: what a valid agent name and
/// route look like, and the stable codes carried by `Notice` and `Goodbye`.

#include <cstddef>
#include <string>
#include <string_view>

namespace convoke::proto {

/// Longest agent name, in bytes.
inline constexpr size_t max_name_length = 64;

/// Longest route, in bytes.
inline constexpr size_t max_route_length = 128;

/// Longest role label, in bytes.
inline constexpr size_t max_role_length = 64;

/// Returns an empty string if `name` is a valid agent name (1-64 characters
/// from [A-Za-z0-9._:@-]), otherwise a sentence saying what is wrong.
std::string check_agent_name(std::string_view name);

/// Returns an empty string if `route` is a valid route (1-128 printable ASCII
/// characters, no spaces), otherwise a sentence saying what is wrong.
std::string check_route(std::string_view route);

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
inline constexpr std::string_view too_many_routes = "too_many_routes";
inline constexpr std::string_view server_full = "server_full";
inline constexpr std::string_view server_busy = "server_busy";
inline constexpr std::string_view idle_timeout = "idle_timeout";
inline constexpr std::string_view frame_timeout = "frame_timeout";
inline constexpr std::string_view slow_consumer = "slow_consumer";
// Per-message problems (WARNING severity, connection kept).
inline constexpr std::string_view unknown_recipient = "unknown_recipient";
inline constexpr std::string_view invalid_recipient = "invalid_recipient";
inline constexpr std::string_view message_too_large = "message_too_large";
inline constexpr std::string_view messages_dropped = "messages_dropped";
inline constexpr std::string_view notices_suppressed = "notices_suppressed";
// Goodbye codes.
inline constexpr std::string_view shutdown = "shutdown";
inline constexpr std::string_view client_exit = "client_exit";
inline constexpr std::string_view replaced = "replaced";
} // namespace codes

} // namespace convoke::proto
