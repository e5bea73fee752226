#include "ops.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace convoke::cli {

using nlohmann::json;

// -- admin address ---------------------------------------------------------------

std::string admin_target::url() const {
  auto h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return fmt::format("{}://{}:{}", https ? "https" : "http", h, port);
}

expected<admin_target> parse_admin_url(std::string_view text) {
  auto bad = [&](std::string why) {
    return fail(std::errc::invalid_argument,
                fmt::format("invalid admin URL '{}': {}", text, std::move(why)));
  };
  admin_target t;
  t.port = default_admin_port;
  auto rest = text;
  if (auto scheme_end = rest.find("://"); scheme_end != std::string_view::npos) {
    auto scheme = rest.substr(0, scheme_end);
    if (scheme == "https")
      t.https = true;
    else if (scheme != "http")
      return bad("the scheme must be http or https");
    rest.remove_prefix(scheme_end + 3);
  }
  if (!rest.empty() && rest.back() == '/')
    rest.remove_suffix(1);
  if (rest.find_first_of("/?#@ ") != std::string_view::npos)
    return bad("give only scheme://host:port (no path, query or user)");
  if (rest.empty())
    return bad("no host");
  std::string_view port_text;
  if (rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos)
      return bad("missing ']' after an IPv6 address");
    t.host = std::string{rest.substr(1, close - 1)};
    auto after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return bad("expected ':port' after ']'");
      port_text = after.substr(1);
      if (port_text.empty())
        return bad("empty port");
    }
  } else {
    auto colon = rest.find(':');
    if (colon != std::string_view::npos && rest.find(':', colon + 1) != std::string_view::npos)
      return bad("an IPv6 address goes in brackets: http://[::1]:7421");
    t.host = std::string{rest.substr(0, colon)};
    if (colon != std::string_view::npos) {
      port_text = rest.substr(colon + 1);
      if (port_text.empty())
        return bad("empty port");
    }
  }
  if (t.host.empty())
    return bad("no host");
  if (!port_text.empty()) {
    uint32_t port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || port > 65535)
        return bad("the port must be a number from 1 to 65535");
      port = port * 10 + static_cast<uint32_t>(c - '0');
    }
    if (port == 0 || port > 65535)
      return bad("the port must be a number from 1 to 65535");
    t.port = static_cast<uint16_t>(port);
  }
  return t;
}

// -- JSON ------------------------------------------------------------------------

namespace {

/// Reads `key` of `obj` into `out` if present and not null; a value of
/// another type throws (caught by the parse functions, which name it).
template <class T>
void take(const json& obj, const char* key, T& out) {
  auto i = obj.find(key);
  if (i == obj.end() || i->is_null())
    return;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!i->is_string())
      throw std::invalid_argument(fmt::format("'{}' is not a string", key));
    out = i->template get<std::string>();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!i->is_boolean())
      throw std::invalid_argument(fmt::format("'{}' is not a boolean", key));
    out = i->template get<bool>();
  } else if constexpr (std::is_same_v<T, double>) {
    if (!i->is_number())
      throw std::invalid_argument(fmt::format("'{}' is not a number", key));
    out = i->template get<double>();
  } else {
    if (!i->is_number_unsigned() && !(i->is_number_integer() && i->template get<int64_t>() >= 0))
      throw std::invalid_argument(fmt::format("'{}' is not a non-negative integer", key));
    out = i->template get<T>();
  }
}

expected<json> parse_object(std::string_view body, std::string_view what) {
  auto j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(std::errc::bad_message, fmt::format("{} did not answer with a JSON object", what));
  return j;
}

agent_row to_row(const json& c) {
  if (!c.is_object())
    throw std::invalid_argument("a connection is not an object");
  agent_row r;
  take(c, "session", r.session);
  take(c, "name", r.name);
  take(c, "address", r.address);
  take(c, "identity", r.identity);
  take(c, "role", r.role);
  take(c, "sdk", r.sdk);
  take(c, "sdk_version", r.sdk_version);
  take(c, "tls", r.tls);
  take(c, "uptime_seconds", r.uptime_seconds);
  take(c, "idle_seconds", r.idle_seconds);
  take(c, "in_msgs", r.in_msgs);
  take(c, "in_bytes", r.in_bytes);
  take(c, "out_msgs", r.out_msgs);
  take(c, "out_bytes", r.out_bytes);
  take(c, "pending_bytes", r.pending_bytes);
  take(c, "dropped", r.dropped);
  if (auto i = c.find("routes"); i != c.end() && !i->is_null()) {
    if (!i->is_array())
      throw std::invalid_argument("'routes' is not an array");
    for (auto& x : *i) {
      if (!x.is_string())
        throw std::invalid_argument("'routes' holds a non-string");
      r.routes.push_back(x.get<std::string>());
    }
  }
  r.json = c.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

} // namespace

expected<connz_page> parse_connz(std::string_view body) {
  auto j = parse_object(body, "/connz");
  if (!j)
    return tl::unexpected{j.error()};
  try {
    connz_page p;
    take(*j, "total", p.total);
    take(*j, "offset", p.offset);
    take(*j, "limit", p.limit);
    auto i = j->find("connections");
    if (i == j->end() || !i->is_array())
      throw std::invalid_argument("'connections' is missing or not an array");
    for (auto& c : *i)
      p.connections.push_back(to_row(c));
    return p;
  } catch (const std::exception& e) {
    return fail(std::errc::bad_message, fmt::format("unexpected /connz answer: {}", e.what()));
  }
}

expected<server_vars> parse_varz(std::string_view body) {
  auto j = parse_object(body, "/varz");
  if (!j)
    return tl::unexpected{j.error()};
  try {
    server_vars v;
    take(*j, "server_name", v.server_name);
    take(*j, "version", v.version);
    take(*j, "uptime_seconds", v.uptime_seconds);
    take(*j, "draining", v.draining);
    take(*j, "connections", v.connections);
    take(*j, "agents", v.agents);
    if (auto c = j->find("config"); c != j->end() && c->is_object()) {
      // The effective config: a number, or a string holding one.
      if (auto m = c->find("limits.max-agents"); m != c->end()) {
        if (m->is_number_unsigned())
          v.max_agents = m->get<uint64_t>();
        else if (m->is_string())
          v.max_agents = std::strtoull(m->get<std::string>().c_str(), nullptr, 10);
      }
    }
    if (auto t = j->find("totals"); t != j->end() && t->is_object())
      for (auto& [k, x] : t->items())
        if (x.is_number_unsigned())
          v.totals[k] = x.get<uint64_t>();
    if (auto r = j->find("rates"); r != j->end() && r->is_object())
      for (auto& [k, x] : r->items())
        if (x.is_number())
          v.rates[k] = x.get<double>();
    return v;
  } catch (const std::exception& e) {
    return fail(std::errc::bad_message, fmt::format("unexpected /varz answer: {}", e.what()));
  }
}

std::string error_text(std::string_view body) {
  auto j = json::parse(body.begin(), body.end(), nullptr, false);
  if (!j.is_discarded() && j.is_object())
    if (auto e = j.find("error"); e != j.end() && e->is_string())
      return e->get<std::string>();
  std::string out;
  for (char c : body.substr(0, 200))
    out.push_back(c >= 0x20 && c < 0x7f ? c : ' ');
  while (!out.empty() && out.back() == ' ')
    out.pop_back();
  return out;
}

// -- paging ------------------------------------------------------------------------

bool page_collector::add(connz_page page) {
  auto n = page.connections.size();
  for (auto& r : page.connections)
    if (seen_.emplace(r.session, true).second)
      rows_.push_back(std::move(r));
  offset_ = page.offset + n;
  // An empty page, or a runaway server: stop.
  return n > 0 && offset_ < page.total && rows_.size() < 10'000'000;
}

// -- formatting ----------------------------------------------------------------------

std::string format_age(double s) {
  if (!(s >= 0) || !std::isfinite(s))
    return "-";
  if (s < 1)
    return fmt::format("{}ms", static_cast<int>(s * 1000));
  if (s < 10)
    return fmt::format("{:.1f}s", std::floor(s * 10) / 10);
  auto t = static_cast<uint64_t>(s);
  if (t < 60)
    return fmt::format("{}s", t);
  if (t < 3600)
    return fmt::format("{}m{:02}s", t / 60, t % 60);
  if (t < 86400)
    return fmt::format("{}h{:02}m", t / 3600, t % 3600 / 60);
  return fmt::format("{}d{:02}h", t / 86400, t % 86400 / 3600);
}

namespace {

/// Three significant digits with a unit suffix ("12.3k").
std::string scaled(double v, double base, const char* const* units, size_t n_units) {
  size_t u = 0;
  while (v >= base && u + 1 < n_units) {
    v /= base;
    ++u;
  }
  // 999.96 would print as "1000": promote it instead.
  if (u + 1 < n_units && v >= 999.95) {
    v /= base;
    ++u;
  }
  if (v < 10)
    return fmt::format("{:.2f}{}", v, units[u]);
  if (v < 100)
    return fmt::format("{:.1f}{}", v, units[u]);
  return fmt::format("{:.0f}{}", v, units[u]);
}

} // namespace

std::string format_count(uint64_t n) {
  if (n < 1000)
    return std::to_string(n);
  static const char* const units[] = {"", "k", "M", "G", "T", "P"};
  return scaled(static_cast<double>(n), 1000, units, 6);
}

std::string format_rate(double r) {
  if (!(r >= 0) || !std::isfinite(r))
    return "-";
  if (r == 0)
    return "0";
  if (r < 100)
    return fmt::format("{:.1f}", r);
  if (r < 1000)
    return fmt::format("{:.0f}", r);
  static const char* const units[] = {"", "k", "M", "G", "T", "P"};
  return scaled(r, 1000, units, 6);
}

std::string format_bytes(double b) {
  if (!(b >= 0) || !std::isfinite(b))
    return "-";
  if (b < 1024)
    return fmt::format("{}B", static_cast<uint64_t>(b));
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled(b, 1024, units, 6);
}

std::string table::render(size_t max_rows) const {
  auto cols = headers.size();
  std::vector<size_t> width(cols);
  auto shown = std::min(rows.size(), max_rows);
  for (size_t c = 0; c < cols; ++c)
    width[c] = headers[c].size();
  for (size_t r = 0; r < shown; ++r)
    for (size_t c = 0; c < cols && c < rows[r].size(); ++c)
      width[c] = std::max(width[c], rows[r][c].size());
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string l;
    for (size_t c = 0; c < cols; ++c) {
      const std::string& cell = c < cells.size() ? cells[c] : std::string{};
      if (c > 0)
        l += "  ";
      auto pad = width[c] - std::min(width[c], cell.size());
      bool right_aligned = c < right.size() && right[c];
      if (right_aligned)
        l.append(pad, ' ');
      l += cell;
      if (!right_aligned && c + 1 < cols)
        l.append(pad, ' ');
    }
    while (!l.empty() && l.back() == ' ')
      l.pop_back();
    out += l;
    out += '\n';
  };
  line(headers);
  for (size_t r = 0; r < shown; ++r)
    line(rows[r]);
  if (shown < rows.size())
    out += fmt::format("... {} more\n", rows.size() - shown);
  return out;
}

// -- server check ---------------------------------------------------------------------

std::string_view to_string(check_status s) noexcept {
  switch (s) {
  case check_status::ok:
    return "OK";
  case check_status::warning:
    return "WARNING";
  case check_status::critical:
    return "CRITICAL";
  case check_status::unknown:
    return "UNKNOWN";
  }
  return "UNKNOWN";
}

check_result evaluate_check(std::string_view url, const http_answer& healthz,
                            const http_answer& readyz, const http_answer& varz,
                            const check_thresholds& t) {
  auto result = [](check_status s, std::string text) {
    return check_result{s, fmt::format("{}: {}", to_string(s), text)};
  };
  auto unreachable = [&](const http_answer& a, std::string_view path) {
    return result(check_status::critical,
                  fmt::format("cannot reach convoke admin at {}{}: {}", url, path, a.error));
  };
  // Liveness first: no answer, or not 200, is CRITICAL.
  if (healthz.status == 0)
    return unreachable(healthz, "/healthz");
  if (healthz.status != 200)
    return result(check_status::critical, fmt::format("{}/healthz answered {}: {}", url,
                                                      healthz.status, error_text(healthz.body)));
  if (readyz.status == 0)
    return unreachable(readyz, "/readyz");
  bool draining = readyz.status == 503;
  if (readyz.status != 200 && !draining)
    return result(check_status::unknown, fmt::format("{}/readyz answered {}: {}", url,
                                                     readyz.status, error_text(readyz.body)));
  if (varz.status == 0)
    return unreachable(varz, "/varz");
  if (varz.status == 401 || varz.status == 403)
    return result(check_status::unknown,
                  fmt::format("{}/varz answered {} ({}): give an admin identity with --identity "
                              "and its token with --token-file or CONVOKE_TOKEN",
                              url, varz.status, error_text(varz.body)));
  if (varz.status != 200)
    return result(check_status::unknown,
                  fmt::format("{}/varz answered {}: {}", url, varz.status, error_text(varz.body)));
  auto v = parse_varz(varz.body);
  if (!v)
    return result(check_status::unknown, v.error().message());
  draining = draining || v->draining;

  auto status = check_status::ok;
  std::vector<std::string> problems;
  auto raise = [&](check_status s, std::string why) {
    status = std::max(status, s);
    problems.push_back(std::move(why));
  };
  if (draining)
    raise(t.draining_critical ? check_status::critical : check_status::warning,
          "draining (shutting down or lame duck)");
  if (t.connections_critical && v->connections >= *t.connections_critical)
    raise(check_status::critical,
          fmt::format("connections {} >= {}", v->connections, *t.connections_critical));
  else if (t.connections_warn && v->connections >= *t.connections_warn)
    raise(check_status::warning,
          fmt::format("connections {} >= {}", v->connections, *t.connections_warn));
  if (t.agents_min && v->agents < *t.agents_min)
    raise(check_status::critical, fmt::format("agents {} < {}", v->agents, *t.agents_min));
  if (v->max_agents > 0) {
    if (v->agents >= v->max_agents)
      raise(check_status::critical,
            fmt::format("agents {} at limits.max-agents {}: new agents are refused", v->agents,
                        v->max_agents));
    else if (static_cast<double>(v->agents)
             >= t.agents_warn_ratio * static_cast<double>(v->max_agents))
      raise(check_status::warning,
            fmt::format("agents {} near limits.max-agents {}", v->agents, v->max_agents));
  }
  auto name = v->server_name.empty() ? std::string{"convoke"} : v->server_name;
  std::string text = fmt::format(
    "{}{}{} {} agents={} connections={} uptime={}", name, v->version.empty() ? "" : " ", v->version,
    draining ? "draining" : "ready", v->agents, v->connections, format_age(v->uptime_seconds));
  for (auto& p : problems)
    text += "; " + p;
  // Performance data (Nagios): label=value;warn;crit;min;max
  auto opt = [](const std::optional<uint64_t>& x) { return x ? std::to_string(*x) : ""; };
  text += fmt::format(" | agents={};;;0;{} connections={};{};{};0", v->agents,
                      v->max_agents > 0 ? std::to_string(v->max_agents) : "", v->connections,
                      opt(t.connections_warn), opt(t.connections_critical));
  for (auto key : {"messages_in", "deliveries", "dropped"})
    if (auto i = v->totals.find(key); i != v->totals.end())
      text += fmt::format(" {}={}c", key, i->second);
  return result(status, std::move(text));
}

// -- agents ------------------------------------------------------------------------

const std::vector<std::string_view>& connz_sort_keys() {
  static const std::vector<std::string_view> keys{
    "session",   "name",          "in_msgs", "out_msgs", "in_bytes",
    "out_bytes", "pending_bytes", "dropped", "idle",     "uptime"};
  return keys;
}

namespace {

std::string percent_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

bool ascending(std::string_view key) {
  return key == "name" || key == "session";
}

std::string routes_cell(const std::vector<std::string>& routes) {
  if (routes.empty())
    return "(all)";
  auto sorted = routes;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (auto& r : sorted) {
    if (!out.empty())
      out += ',';
    out += r;
  }
  if (out.size() > 40)
    out = out.substr(0, 37) + "...";
  return out;
}

std::string sdk_cell(const agent_row& r) {
  if (r.sdk.empty())
    return "-";
  return r.sdk_version.empty() ? r.sdk : r.sdk + "/" + r.sdk_version;
}

} // namespace

std::string connz_query(std::string_view sort, std::string_view name, uint64_t offset,
                        uint64_t limit) {
  auto q = fmt::format("/connz?sort={}&order={}&offset={}&limit={}", sort,
                       ascending(sort) ? "asc" : "desc", offset, limit);
  if (!name.empty())
    q += "&name=" + percent_encode(name);
  return q;
}

table agents_table(const std::vector<agent_row>& rows) {
  table t;
  t.headers = {"NAME",    "ADDRESS",  "SDK",     "CONNECTED", "IDLE",
               "IN MSGS", "OUT MSGS", "PENDING", "DROPPED",   "ROUTES"};
  t.right = {false, false, false, true, true, true, true, true, true, false};
  for (auto& r : rows)
    t.rows.push_back({r.name, r.address, sdk_cell(r), format_age(r.uptime_seconds),
                      format_age(r.idle_seconds), format_count(r.in_msgs), format_count(r.out_msgs),
                      format_bytes(static_cast<double>(r.pending_bytes)), format_count(r.dropped),
                      routes_cell(r.routes)});
  return t;
}

// -- top -------------------------------------------------------------------------

std::vector<rate_row> compute_rates(const std::vector<agent_row>& before,
                                    const std::vector<agent_row>& now, double fallback_seconds) {
  std::unordered_map<uint64_t, const agent_row*> prev;
  for (auto& r : before)
    prev.emplace(r.session, &r);
  std::vector<rate_row> out;
  out.reserve(now.size());
  for (auto& r : now) {
    rate_row x;
    x.row = r;
    if (auto i = prev.find(r.session); i != prev.end()) {
      auto& p = *i->second;
      auto dt = r.uptime_seconds - p.uptime_seconds;
      if (!(dt > 0.001))
        dt = fallback_seconds;
      if (dt > 0) {
        auto per_second
          = [&](uint64_t a, uint64_t b) { return b >= a ? static_cast<double>(b - a) / dt : 0.0; };
        x.in_rate = per_second(p.in_msgs, r.in_msgs);
        x.out_rate = per_second(p.out_msgs, r.out_msgs);
      }
    }
    out.push_back(std::move(x));
  }
  return out;
}

const std::vector<std::string_view>& top_sort_keys() {
  static const std::vector<std::string_view> keys{
    "in_rate",  "out_rate",  "session",       "name",    "in_msgs", "out_msgs",
    "in_bytes", "out_bytes", "pending_bytes", "dropped", "idle",    "uptime"};
  return keys;
}

bool sort_top(std::vector<rate_row>& rows, std::string_view key) {
  auto num = [&](const rate_row& x) -> double {
    auto& r = x.row;
    if (key == "in_rate")
      return x.in_rate.value_or(-1);
    if (key == "out_rate")
      return x.out_rate.value_or(-1);
    if (key == "in_msgs")
      return static_cast<double>(r.in_msgs);
    if (key == "out_msgs")
      return static_cast<double>(r.out_msgs);
    if (key == "in_bytes")
      return static_cast<double>(r.in_bytes);
    if (key == "out_bytes")
      return static_cast<double>(r.out_bytes);
    if (key == "pending_bytes")
      return static_cast<double>(r.pending_bytes);
    if (key == "dropped")
      return static_cast<double>(r.dropped);
    if (key == "idle")
      return r.idle_seconds;
    return r.uptime_seconds; // "uptime"
  };
  auto& keys = top_sort_keys();
  if (std::find(keys.begin(), keys.end(), key) == keys.end())
    return false;
  if (key == "session") {
    std::sort(rows.begin(), rows.end(),
              [](const rate_row& a, const rate_row& b) { return a.row.session < b.row.session; });
  } else if (key == "name") {
    std::sort(rows.begin(), rows.end(), [](const rate_row& a, const rate_row& b) {
      return a.row.name != b.row.name ? a.row.name < b.row.name : a.row.session < b.row.session;
    });
  } else {
    std::sort(rows.begin(), rows.end(), [&](const rate_row& a, const rate_row& b) {
      auto x = num(a);
      auto y = num(b);
      return x != y ? x > y : a.row.session < b.row.session;
    });
  }
  return true;
}

std::string top_header(std::string_view url, const server_vars& v) {
  auto rate = [&](const char* key) {
    auto i = v.rates.find(key);
    return i == v.rates.end() ? -1.0 : i->second;
  };
  auto total = [&](const char* key) {
    auto i = v.totals.find(key);
    return i == v.totals.end() ? std::string{"-"} : format_count(i->second);
  };
  auto name = v.server_name.empty() ? std::string{"convoke"} : v.server_name;
  auto first = fmt::format("{} {} at {}  uptime {}  agents {}  connections {}{}", name, v.version,
                           url, format_age(v.uptime_seconds), v.agents, v.connections,
                           v.draining ? "  DRAINING" : "");
  auto second = fmt::format(
    "messages in {}/s  deliveries {}/s  bytes in {}/s  out {}/s  totals: in {} delivered {} "
    "dropped {}",
    format_rate(rate("messages_in_per_second")), format_rate(rate("deliveries_per_second")),
    format_bytes(rate("bytes_in_per_second")), format_bytes(rate("bytes_out_per_second")),
    total("messages_in"), total("deliveries"), total("dropped"));
  return first + "\n" + second + "\n";
}

table top_table(const std::vector<rate_row>& rows) {
  table t;
  t.headers = {"NAME",    "ADDRESS", "IN/S", "OUT/S",  "IN MSGS", "OUT MSGS",
               "PENDING", "DROPPED", "IDLE", "UPTIME", "SDK"};
  t.right = {false, false, true, true, true, true, true, true, true, true, false};
  auto rate = [](const std::optional<double>& r) { return r ? format_rate(*r) : "-"; };
  for (auto& x : rows) {
    auto& r = x.row;
    t.rows.push_back({r.name, r.address, rate(x.in_rate), rate(x.out_rate), format_count(r.in_msgs),
                      format_count(r.out_msgs), format_bytes(static_cast<double>(r.pending_bytes)),
                      format_count(r.dropped), format_age(r.idle_seconds),
                      format_age(r.uptime_seconds), sdk_cell(r)});
  }
  return t;
}

} // namespace convoke::cli
