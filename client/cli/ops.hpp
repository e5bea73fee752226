#pragma once

// The operator commands of the `convoke` CLI (`server check`, `agents`,
// `top`): the admin API's JSON (docs/operations.md) turned
// into rows, rates, checks and tables. Free of CAF and of HTTP, so unit tests
// drive it with JSON text; admin_client.hpp does the requests.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convoke/common/error.hpp"

namespace convoke::cli {

// -- admin address ---------------------------------------------------------------

/// Where the admin listener is: http(s)://host:port.
struct admin_target {
  bool https = false;
  std::string host;
  uint16_t port = 0;

  /// "http://127.0.0.1:7421" (IPv6 hosts in brackets).
  std::string url() const;
};

/// Default admin port (the server's admin.port default).
inline constexpr uint16_t default_admin_port = 7421;

/// Parses "http://host:port", "https://host:port", "host:port" or "host"
/// (http, port 7421 when missing). A path, user info or query is refused.
expected<admin_target> parse_admin_url(std::string_view text);

// -- /connz and /varz -----------------------------------------------------------------

/// One agent, as /connz describes it.
struct agent_row {
  uint64_t session = 0;
  std::string name;
  std::string address;
  std::string identity;
  std::string role;
  std::string sdk;
  std::string sdk_version;
  bool tls = false;
  double uptime_seconds = 0;
  double idle_seconds = 0;
  uint64_t in_msgs = 0;
  uint64_t in_bytes = 0;
  uint64_t out_msgs = 0;
  uint64_t out_bytes = 0;
  uint64_t pending_bytes = 0;
  uint64_t dropped = 0;
  std::vector<std::string> routes;
  /// The server's object as it came (compact JSON), for --json.
  std::string json;
};

/// One page of /connz.
struct connz_page {
  uint64_t total = 0;
  uint64_t offset = 0;
  uint64_t limit = 0;
  std::vector<agent_row> connections;
};

/// Parses a /connz body. Missing fields take their zero value; a field of
/// the wrong type, or a body that is not a JSON object, is an error naming it.
expected<connz_page> parse_connz(std::string_view body);

/// What `server check` and `top` use of /varz.
struct server_vars {
  std::string server_name;
  std::string version;
  double uptime_seconds = 0;
  bool draining = false;
  uint64_t connections = 0;
  uint64_t agents = 0;
  /// limits.max-agents from the effective config (0: not reported).
  uint64_t max_agents = 0;
  std::map<std::string, uint64_t> totals;
  std::map<std::string, double> rates;
};

expected<server_vars> parse_varz(std::string_view body);

/// The "error" member of an admin error body, or the body itself (cut).
std::string error_text(std::string_view body);

// -- paging ------------------------------------------------------------------------

/// Collects the pages of a listing: rows already seen (by session id) are
/// skipped, since agents that leave between two requests shift the offsets.
class page_collector {
public:
  /// Adds a page; true if another page should be fetched (at `offset()`).
  bool add(connz_page page);

  uint64_t offset() const noexcept {
    return offset_;
  }

  std::vector<agent_row>& rows() noexcept {
    return rows_;
  }

private:
  uint64_t offset_ = 0;
  std::vector<agent_row> rows_;
  std::map<uint64_t, bool> seen_;
};

// -- server check ---------------------------------------------------------------------

/// Nagios plugin exit codes.
enum class check_status : int { ok = 0, warning = 1, critical = 2, unknown = 3 };

std::string_view to_string(check_status s) noexcept;

/// What `server check` compares /varz with.
struct check_thresholds {
  /// WARNING / CRITICAL at or above this many connections.
  std::optional<uint64_t> connections_warn;
  std::optional<uint64_t> connections_critical;
  /// CRITICAL below this many agents (the agents a deployment needs).
  std::optional<uint64_t> agents_min;
  /// A draining server (shutdown, lame duck) is CRITICAL instead of WARNING.
  bool draining_critical = false;
  /// Share of limits.max-agents at which the check warns (1.0 = full is
  /// CRITICAL in any case).
  double agents_warn_ratio = 0.9;
};

/// One HTTP answer (status 0 with `error`: no answer at all).
struct http_answer {
  int status = 0;
  std::string body;
  std::string error;
};

struct check_result {
  check_status status = check_status::unknown;
  /// "OK: convoke 0.9.0 ready agents=3 ... | agents=3;;..." (one line).
  std::string line;
};

/// Decides the check from the three answers (see docs/operations.md).
check_result evaluate_check(std::string_view url, const http_answer& healthz,
                            const http_answer& readyz, const http_answer& varz,
                            const check_thresholds& t);

// -- formatting ----------------------------------------------------------------------

/// "850ms", "12.3s", "4m05s", "2h03m", "3d04h".
std::string format_age(double seconds);

/// "999", "12.3k", "4.56M", "1.2G".
std::string format_count(uint64_t n);

/// "0", "0.5", "12.3", "1.2k" (per second).
std::string format_rate(double per_second);

/// "0B", "512B", "1.5KiB", "3.2MiB".
std::string format_bytes(double bytes);

/// A text table: columns as wide as their widest cell, numbers right-aligned.
struct table {
  std::vector<std::string> headers;
  /// Per column: right-aligned.
  std::vector<bool> right;
  std::vector<std::vector<std::string>> rows;

  /// Each line ends in '\n'; at most `max_rows` rows (the rest are counted
  /// in a last line "... N more").
  std::string render(size_t max_rows = SIZE_MAX) const;
};

// -- agents ------------------------------------------------------------------------

/// The /connz sort keys (the server sorts for `agents`).
const std::vector<std::string_view>& connz_sort_keys();

/// The /connz query for a page: sort, order (desc for counters and
/// durations, asc for name and session), offset, limit, name filter
/// (percent-encoded).
std::string connz_query(std::string_view sort, std::string_view name, uint64_t offset,
                        uint64_t limit);

table agents_table(const std::vector<agent_row>& rows);

// -- top -------------------------------------------------------------------------

/// An agent with its message rates between two snapshots.
struct rate_row {
  agent_row row;
  /// Messages per second since the previous snapshot (nullopt: the agent
  /// is new since then, so there is no rate yet).
  std::optional<double> in_rate;
  std::optional<double> out_rate;
};

/// Rates of `now` against `before` (matched by session id). The elapsed time
/// of each agent is the difference of its uptime_seconds (the server's
/// clock); `fallback_seconds` is used when that is not positive.
std::vector<rate_row> compute_rates(const std::vector<agent_row>& before,
                                    const std::vector<agent_row>& now, double fallback_seconds);

/// The sort keys of `top` (connz keys plus in_rate, out_rate).
const std::vector<std::string_view>& top_sort_keys();

/// Sorts for `top` (descending except name and session); false for an
/// unknown key.
bool sort_top(std::vector<rate_row>& rows, std::string_view key);

/// The two summary lines above the table.
std::string top_header(std::string_view url, const server_vars& v);

table top_table(const std::vector<rate_row>& rows);

} // namespace convoke::cli
