#pragma once

/// @file
/// Small text helpers for structured output: JSON string escaping, logfmt
/// values, hex, and RFC 3339 timestamps.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace convoke {

/// Appends `text` as a quoted JSON string (control characters and invalid
/// UTF-8 bytes escaped, so the result is always valid JSON).
void append_json_string(std::string& out, std::string_view text);

/// Returns `text` as a quoted JSON string.
std::string json_string(std::string_view text);

/// Returns `value` as a logfmt value: unchanged if it has no spaces, quotes,
/// '=' or control characters (and is not empty), otherwise quoted and escaped.
std::string logfmt_value(std::string_view value);

/// Lower-case hex of `bytes`.
std::string to_hex(std::string_view bytes);

/// The bytes of an even number of hex digits (either case); nullopt for
/// anything else.
std::optional<std::string> from_hex(std::string_view hex);

/// RFC 3339 UTC timestamp with microseconds, e.g. "2026-11-24T12:00:01.123456Z".
std::string format_timestamp(int64_t unix_nanos);

/// Appends the timestamp to `out` (no allocation beyond growth of `out`).
void append_timestamp(std::string& out, int64_t unix_nanos);

/// Parses an RFC 3339 time ("2026-11-24T12:00:01.123456Z", any fraction of
/// up to 9 digits, 'Z' or an offset like +01:00; 't', 'z' and a space for
/// 'T' accepted) into unix nanoseconds; nullopt if it is not one (or out of
/// range: 1970 to 2262, what unix nanoseconds in 64 bits hold).
std::optional<int64_t> parse_timestamp(std::string_view text);

} // namespace convoke
