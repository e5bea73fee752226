#pragma once

// The admin endpoints' content, apart from HTTP: query parsing, JSON bodies
// and the Prometheus text exposition. CAF-free and socket-free, so unit
// tests check them directly (tests/unit/admin_views_test.cpp).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster_rules.hpp"
#include "convoke/common/error.hpp"
#include "convoke/server/config.hpp"
#include "convoke/server/stats.hpp"
#include "session_registry.hpp"

namespace convoke::server::admin {

/// GET /connz parameters (docs/operations.md).
struct connz_query {
  enum class key : uint8_t {
    session,
    name,
    in_msgs,
    out_msgs,
    in_bytes,
    out_bytes,
    pending_bytes,
    dropped,
    idle,
    uptime
  };
  key sort = key::session;
  bool descending = false;
  size_t offset = 0;
  size_t limit = 100;
  /// Only agents whose name contains it (empty: all).
  std::string name;

  /// Rows per answer: bounds what one request builds (each row holds up to
  /// limits.max-routes routes) at about 1000 x 256 routes.
  static constexpr size_t max_limit = 1000;
};

/// Parses the query parameters of /connz; unknown parameters, unknown sort
/// keys and numbers out of range are errors whose text says which.
expected<connz_query> parse_connz_query(const std::multimap<std::string, std::string>& params);

/// Clock readings taken once per request.
struct now_t {
  std::chrono::system_clock::time_point wall;
  std::chrono::steady_clock::time_point steady;

  static now_t read() {
    return {std::chrono::system_clock::now(), std::chrono::steady_clock::now()};
  }
};

/// RFC 3339 UTC with microseconds, as in logs and traces
/// ("2026-11-30T12:00:00.123456Z"; common/text.hpp format_timestamp).
std::string rfc3339(std::chrono::system_clock::time_point t);

nlohmann::json connz(std::vector<session_info_ptr> agents, const connz_query& q, now_t now);

nlohmann::json routez(const std::vector<session_info_ptr>& agents);

/// Totals per second over the sampler's last interval.
struct rates {
  double messages_in = 0;
  double deliveries = 0;
  double bytes_in = 0;
  double bytes_out = 0;
};

struct server_facts {
  std::string name;
  std::string version;
  uint32_t protocol_version = 0;
  std::string host;
  uint16_t port = 0;
  uint16_t admin_port = 0;
  std::chrono::system_clock::time_point started;
  bool draining = false;
  /// Set on a cluster node (docs/cluster.md).
  std::optional<cluster_status> cluster;
};

nlohmann::json varz(const server_facts& facts, const server_config& cfg, const server_stats& s,
                    const rates& r, now_t now);

/// What /metrics shows besides the counters.
struct process_facts {
  uint64_t resident_bytes = 0;
  uint64_t open_fds = 0;
  double cpu_seconds = 0;
  bool known = false;
};

/// Reads /proc/self (Linux); `known` is false if it cannot.
process_facts read_process_facts();

/// Prometheus text exposition format 0.0.4.
std::string metrics(const server_facts& facts, const server_stats& s,
                    const session_registry& registry, const process_facts& proc);

} // namespace convoke::server::admin
