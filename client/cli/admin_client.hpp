#pragma once

// GET requests to the server's admin listener (cpp-httplib), for the
// operator commands. One request at a time; no CAF.

#include <chrono>
#include <string>

#include "ops.hpp"

namespace convoke::cli {

struct admin_options {
  admin_target target;
  /// HTTP Basic credentials (identity, token); none when the password is
  /// empty.
  std::string user;
  std::string password;
  /// PEM CA file for https (empty: the system's CAs).
  std::string ca_file;
  /// For connecting, and for each read and write.
  std::chrono::milliseconds timeout{5000};
};

/// GETs `path` ("/varz", "/connz?..."). Status 0 with `error` if there was no
/// HTTP answer (refused, timed out, TLS failure).
http_answer admin_get(const admin_options& opts, const std::string& path);

} // namespace convoke::cli
