#pragma once

/// @file
/// W3C Trace Context (https://www.w3.org/TR/trace-context/): the
/// `traceparent` header that OpenTelemetry and other tracers put on a
/// message, e.g. "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".

#include <optional>
#include <string>
#include <string_view>

namespace convoke::trace {

struct traceparent {
  /// 16 raw bytes.
  std::string trace_id;
  /// The caller's span (the header's parent-id): 8 raw bytes.
  std::string parent_id;
  uint8_t flags = 0;
};

/// Parses a traceparent header value as the specification says a receiver
/// must: version 00 is exactly 55 characters; a later version (not ff) may
/// be longer, with '-' after the first 55; lower-case hex only; an all-zero
/// trace id or parent id is invalid. nullopt for anything else.
std::optional<traceparent> parse_traceparent(std::string_view value) noexcept;

/// The header value for `trace_id` (16 bytes) and `parent_id` (8 bytes).
std::string format_traceparent(std::string_view trace_id, std::string_view parent_id,
                               uint8_t flags = 1);

} // namespace convoke::trace
