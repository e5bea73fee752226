#pragma once

/// @file
/// Structured logging on top of spdlog. Every Convoke component logs through
/// a named logger ("server", "session", "router", "agent", ...) that shares one
/// configured sink. Messages are written logfmt-style, an event text followed
/// by `key=value` fields:
///
///     session established agent=alice session=3 remote=127.0.0.1:50312
///
/// The `text` format prints that line after a timestamp, level and logger; the
/// `json` format turns it into one JSON object per line with the fields as
/// members: {"ts":"...","level":"info","logger":"session",
/// "msg":"session established","agent":"alice","session":3,...}.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <spdlog/logger.h>

#include "convoke/common/error.hpp"

namespace convoke::logging {

enum class format : uint8_t { text, json };

/// Parses "text" or "json".
std::optional<format> parse_format(std::string_view text);
std::string_view to_string(format f);

/// Parses trace, debug, info, warn, error, critical, off.
std::optional<spdlog::level::level_enum> parse_level(std::string_view text);

struct options {
  /// Minimum level.
  std::string level = "info";
  /// Output format.
  format fmt = format::text;
  /// Log file; empty means standard error.
  std::string file;
  /// Rotate the log file at this size, keeping `max_files` old files.
  uint64_t max_file_bytes = 64ull << 20;
  uint32_t max_files = 5;
};

/// Configures the shared sink and format for all Convoke loggers, including
/// ones created before. Errors change nothing: `std::errc::invalid_argument`
/// for an unknown level ("unknown log level 'x'"), or the errno of opening
/// the file (e.g. `std::errc::permission_denied`, "cannot open log file
/// 'path': ...").
expected<> configure(const options& opts);

/// Changes the minimum level of every Convoke logger (and of those created
/// later) while others log: `std::errc::invalid_argument` for an unknown
/// level, which changes nothing.
expected<> set_level(std::string_view level);

/// Changes the format of the shared sink while others log.
void set_format(format f);

/// Opens the log file again by its path (after logrotate renamed it): the
/// next record goes to a new file of that name, the old one is flushed and
/// closed; nothing is lost or cut. False when logging to standard error
/// (nothing to reopen). An error (the errno of the failed open, "cannot
/// open log file 'path': ...") keeps the current file.
expected<bool> reopen();

/// Returns the named logger, creating it on first use.
std::shared_ptr<spdlog::logger> get(const std::string& name);

/// The JSON-lines formatter described above (exposed for tests).
std::unique_ptr<spdlog::formatter> make_json_formatter();

/// Converts a logfmt-style message into JSON members appended to `out`
/// (starting with "msg"), exposed for tests.
void append_logfmt_as_json(std::string& out, std::string_view message);

} // namespace convoke::logging
