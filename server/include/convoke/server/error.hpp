#pragma once

/// @file
/// Error codes of the Convoke server (configuration and start-up), usable as
/// `std::error_code` in a `convoke::error`. The error's text names the key,
/// file or address and the underlying reason ("Address already in use").

#include <cstdint>
#include <string_view>
#include <system_error>

namespace convoke::server {

enum class errc : uint8_t {
  /// A configuration key that does not exist (file, environment or flag).
  unknown_key = 1,
  /// A value that does not parse or is outside the key's range.
  invalid_value,
  /// Keys that are valid alone but not together (see `validate`).
  invalid_config,
  /// The configuration file cannot be read, is not TOML, or is not laid
  /// out in [sections] of keys.
  bad_config_file,
  /// A log, trace or port file cannot be written.
  unwritable_file,
  /// `listen.host` does not resolve to an address.
  resolve_failed,
  /// The listening socket cannot be created or bound (address in use,
  /// permission denied, ...).
  bind_failed,
  /// `server::start()` was called twice.
  already_started,
};

/// The "convoke.server" error category.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Stable name of a code ("unknown_key", "bind_failed", ...).
std::string_view to_string(errc e) noexcept;

} // namespace convoke::server

template <>
struct std::is_error_code_enum<convoke::server::errc> : std::true_type {};
