#pragma once

/// @file
/// Error codes of the Convoke client SDK, usable as `std::error_code`.

#include <string>
#include <system_error>

namespace convoke {

enum class errc {
  /// The agent has no session right now (connecting, reconnecting, stopped).
  not_connected = 1,
  /// More than `client_options::max_pending_bytes` are waiting to be written:
  /// the server or the network is not keeping up. Retry later.
  send_buffer_full,
  /// An argument is invalid (e.g. an empty recipient or a malformed route).
  invalid_argument,
  /// A request got no reply within its timeout.
  timeout,
  /// The connection was lost while a request was waiting for its reply.
  connection_lost,
  /// The server refused the operation (see the accompanying text).
  refused,
  /// The agent is stopping.
  stopped,
  /// The message is larger than the server accepts
  /// (`session_info::max_frame_bytes`); it was not sent.
  message_too_large,
  /// The task was cancelled (`task::cancel()`, its session ended, or the
  /// agent stopped).
  cancelled,
  /// The task's code threw; the text is the exception's `what()`.
  failed,
  /// The server does not offer this (an older server; see
  /// `session_info::features`).
  unsupported,
};

/// The "convoke" error category.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Stable name of an error code ("timeout", "not_connected", ...).
std::string to_string(errc e);

} // namespace convoke

template <>
struct std::is_error_code_enum<convoke::errc> : std::true_type {};
