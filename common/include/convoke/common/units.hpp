#pragma once

/// @file
/// Parsing and printing of durations ("250ms", "5s") and sizes ("1MiB").

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace convoke {

using duration = std::chrono::milliseconds;

/// Parses "0", "250ms", "5s", "2m", "1h" (a non-negative integer and a unit;
/// a bare "0" needs none). Returns nullopt on anything else.
std::optional<duration> parse_duration(std::string_view text);

/// Renders a duration in the largest unit that keeps it exact ("5s", "250ms").
std::string format_duration(duration d);

/// Parses a byte size: "4096", "64KiB", "8MiB", "1GiB" (K/KiB, M/MiB, G/GiB
/// are binary multiples; a "B" suffix is allowed). Returns nullopt on anything
/// else or on overflow.
std::optional<uint64_t> parse_size(std::string_view text);

/// Renders a size in the largest binary unit that keeps it exact ("8MiB").
std::string format_size(uint64_t bytes);

/// Parses a boolean: true/false, yes/no, on/off, 1/0.
std::optional<bool> parse_bool(std::string_view text);

/// Splits "host:port" (or "[v6]:port", or ":port", or "port"). Missing parts
/// take the defaults. Returns nullopt for a malformed port.
struct host_port {
  std::string host;
  uint16_t port = 0;
};
std::optional<host_port> parse_host_port(std::string_view text, std::string_view default_host,
                                         uint16_t default_port);

/// Wall clock as Unix epoch nanoseconds.
int64_t unix_nanos() noexcept;

} // namespace convoke
