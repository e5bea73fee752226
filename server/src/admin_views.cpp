#include "admin_views.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>

#include "convoke/common/text.hpp"

namespace convoke::server::admin {

namespace {

using key = connz_query::key;

const std::vector<std::pair<std::string_view, key>>& sort_keys() {
  static const std::vector<std::pair<std::string_view, key>> keys{
    {"session", key::session},
    {"name", key::name},
    {"in_msgs", key::in_msgs},
    {"out_msgs", key::out_msgs},
    {"in_bytes", key::in_bytes},
    {"out_bytes", key::out_bytes},
    {"pending_bytes", key::pending_bytes},
    {"dropped", key::dropped},
    {"idle", key::idle},
    {"uptime", key::uptime}};
  return keys;
}

expected<size_t> parse_count(const std::string& name, const std::string& text, size_t max) {
  size_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty())
    return fail(std::errc::invalid_argument,
                fmt::format("{}: '{}' is not a non-negative integer", name, text));
  if (v > max)
    return fail(std::errc::invalid_argument, fmt::format("{}: {} is above {}", name, v, max));
  return v;
}

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::max(0.0, std::chrono::duration<double>(b - a).count());
}

std::chrono::steady_clock::time_point last_activity(const session_info& s) {
  return std::chrono::steady_clock::time_point{
    std::chrono::steady_clock::duration{s.last_activity_ns.load(std::memory_order_relaxed)}};
}

} // namespace

expected<connz_query> parse_connz_query(const std::multimap<std::string, std::string>& params) {
  connz_query q;
  for (auto& [k, v] : params) {
    if (k == "sort") {
      const std::string& wanted = v; // (clang 14 cannot capture a structured binding)
      auto it = std::find_if(sort_keys().begin(), sort_keys().end(),
                             [&](auto& p) { return p.first == wanted; });
      if (it == sort_keys().end()) {
        std::string known;
        for (auto& p : sort_keys())
          known += (known.empty() ? "" : ", ") + std::string{p.first};
        return fail(std::errc::invalid_argument,
                    fmt::format("sort: unknown key '{}' (one of {})", v, known));
      }
      q.sort = it->second;
    } else if (k == "order") {
      if (v != "asc" && v != "desc")
        return fail(std::errc::invalid_argument,
                    fmt::format("order: '{}' is neither asc nor desc", v));
      q.descending = v == "desc";
    } else if (k == "offset") {
      auto n = parse_count(k, v, 1u << 30);
      if (!n)
        return tl::unexpected{std::move(n.error())};
      q.offset = *n;
    } else if (k == "limit") {
      auto n = parse_count(k, v, connz_query::max_limit);
      if (!n)
        return tl::unexpected{std::move(n.error())};
      if (*n == 0)
        return fail(std::errc::invalid_argument, "limit: must be at least 1");
      q.limit = *n;
    } else if (k == "name") {
      if (v.size() > 256)
        return fail(std::errc::invalid_argument, "name: longer than 256 bytes");
      q.name = v;
    } else {
      return fail(
        std::errc::invalid_argument,
        fmt::format("unknown parameter '{}' (sort, order, offset, limit, name)", k.substr(0, 64)));
    }
  }
  return q;
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  return format_timestamp(
    std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

nlohmann::json connz(std::vector<session_info_ptr> agents, const connz_query& q, now_t now) {
  if (!q.name.empty())
    agents.erase(std::remove_if(agents.begin(), agents.end(),
                                [&](auto& a) { return a->name.find(q.name) == std::string::npos; }),
                 agents.end());
  // Sort on values read once (counters move while we sort).
  struct row {
    session_info_ptr info;
    uint64_t number = 0;
  };
  std::vector<row> rows;
  rows.reserve(agents.size());
  for (auto& a : agents) {
    uint64_t n = 0;
    switch (q.sort) {
    case key::session:
    case key::name:
      n = a->session;
      break;
    case key::in_msgs:
      n = a->in_msgs.get();
      break;
    case key::out_msgs:
      n = a->out_msgs.get();
      break;
    case key::in_bytes:
      n = a->in_bytes.get();
      break;
    case key::out_bytes:
      n = a->out_bytes.get();
      break;
    case key::pending_bytes:
      n = a->pending_bytes.get();
      break;
    case key::dropped:
      n = a->dropped.get();
      break;
    case key::idle: // longest idle = earliest activity
      // Input read after `now` (the relay runs on) is idle 0, not -1 ns
      // wrapped to the largest idle time.
      n = static_cast<uint64_t>(
        std::max<int64_t>(0, now.steady.time_since_epoch().count()
                               - a->last_activity_ns.load(std::memory_order_relaxed)));
      break;
    case key::uptime:
      n = static_cast<uint64_t>(std::max<int64_t>(0, (now.wall - a->connected_since).count()));
      break;
    }
    rows.push_back({a, n});
  }
  auto less = [&](const row& a, const row& b) {
    if (q.sort == key::name && a.info->name != b.info->name)
      return a.info->name < b.info->name;
    if (a.number != b.number)
      return a.number < b.number;
    return a.info->session < b.info->session; // stable order for paging
  };
  std::sort(rows.begin(), rows.end(),
            [&](const row& a, const row& b) { return q.descending ? less(b, a) : less(a, b); });
  auto out = nlohmann::json::object();
  out["now"] = rfc3339(now.wall);
  out["total"] = rows.size();
  out["offset"] = q.offset;
  out["limit"] = q.limit;
  auto list = nlohmann::json::array();
  for (size_t i = q.offset; i < rows.size() && i < q.offset + q.limit; ++i) {
    auto& a = *rows[i].info;
    auto active = last_activity(a);
    auto idle = seconds_between(active, now.steady);
    list.push_back({
      {"session", a.session},
      {"name", a.name},
      {"address", a.address},
      {"identity", a.identity},
      {"role", a.role},
      {"sdk", a.sdk},
      {"sdk_version", a.sdk_version},
      {"tls", a.tls},
      {"connected_since", rfc3339(a.connected_since)},
      {"uptime_seconds",
       std::max(0.0, std::chrono::duration<double>(now.wall - a.connected_since).count())},
      {"last_activity", rfc3339(now.wall
                                - std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                  std::chrono::duration<double>(idle)))},
      {"idle_seconds", idle},
      {"in_msgs", a.in_msgs.get()},
      {"in_bytes", a.in_bytes.get()},
      {"out_msgs", a.out_msgs.get()},
      {"out_bytes", a.out_bytes.get()},
      {"pending_bytes", a.pending_bytes.get()},
      {"dropped", a.dropped.get()},
      {"routes", a.routes()},
    });
  }
  out["connections"] = std::move(list);
  return out;
}

nlohmann::json routez(const std::vector<session_info_ptr>& agents) {
  std::map<std::string, uint64_t> counts; // sorted by route
  uint64_t every = 0;
  for (auto& a : agents) {
    auto routes = a->routes();
    if (routes.empty())
      ++every;
    for (auto& r : routes)
      ++counts[r];
  }
  auto list = nlohmann::json::array();
  for (auto& [route, n] : counts)
    list.push_back({{"route", route}, {"subscribers", n}});
  return {{"total", counts.size()}, {"every_broadcast", every}, {"routes", std::move(list)}};
}

namespace {

/// Every counter of server_stats with its Prometheus name and help.
struct counter_def {
  const char* name;
  const char* type; // counter or gauge
  const char* help;
  uint64_t server_stats::*field;
};

const std::vector<counter_def>& counter_defs() {
  static const std::vector<counter_def> defs{
    {"connections_total", "counter", "Connections accepted since start.",
     &server_stats::connections_total},
    {"connections", "gauge", "Connections open now, handshaking included.",
     &server_stats::connections_open},
    {"agents", "gauge", "Agents past the handshake now.", &server_stats::agents},
    {"messages_in_total", "counter", "Envelopes accepted from agents.", &server_stats::messages_in},
    {"bytes_in_total", "counter", "Bytes of the envelopes accepted, as sent.",
     &server_stats::bytes_in},
    {"bytes_out_total", "counter", "Bytes of the deliveries written to agents.",
     &server_stats::bytes_out},
    {"deliveries_total", "counter", "Envelope copies queued to agents.", &server_stats::deliveries},
    {"undeliverable_total", "counter", "Direct messages whose recipient was not connected.",
     &server_stats::undeliverable},
    {"rejected_total", "counter", "Envelopes not relayed: invalid recipient or route.",
     &server_stats::rejected},
    {"dropped_total", "counter",
     "Deliveries never written to their receiver (slow consumer, closed connection, shutdown).",
     &server_stats::dropped},
    {"slow_consumers_total", "counter", "Sessions closed as slow consumers.",
     &server_stats::slow_consumers},
    {"protocol_errors_total", "counter", "Sessions closed for protocol violations.",
     &server_stats::protocol_errors},
    {"timeouts_total", "counter", "Sessions closed by the idle or handshake timeout.",
     &server_stats::timeouts},
    {"input_pauses_total", "counter", "Times a session stopped reading: input window full.",
     &server_stats::input_pauses},
    {"buffered_bytes", "gauge", "Bytes held for all connections now (limits.max-buffered-bytes).",
     &server_stats::buffered_bytes},
    {"budget_exceeded_total", "counter",
     "Readers treated as slow consumers because the server was over its memory budget.",
     &server_stats::budget_exceeded},
    {"budget_pauses_total", "counter", "Times a session paused reading for the memory budget.",
     &server_stats::budget_pauses},
    {"released_bytes_total", "counter", "Capacity of large output buffers given back.",
     &server_stats::released_bytes},
    {"accept_errors_total", "counter", "accept() failures for lack of resources.",
     &server_stats::accept_errors},
    {"handshakes_evicted_total", "counter",
     "Connections closed to make room under limits.max-handshakes.",
     &server_stats::handshakes_evicted},
    {"auth_failures_total", "counter", "Logins refused: unknown identity or wrong token.",
     &server_stats::auth_failures},
    {"auth_throttled_total", "counter",
     "Logins refused at once because their address failed too often.",
     &server_stats::auth_throttled},
    {"permission_denied_total", "counter", "Actions an identity's rights refused.",
     &server_stats::permission_denied},
    {"rate_limited_total", "counter", "Envelopes not relayed because of rate limits.",
     &server_stats::rate_limited},
    {"quarantines_total", "counter", "Principals quarantined.", &server_stats::quarantines},
    {"quarantine_refused_total", "counter", "Hellos refused because of a quarantine.",
     &server_stats::quarantine_refused},
    {"too_many_connections_total", "counter",
     "Connections refused by limits.max-connections-per-address.",
     &server_stats::too_many_connections},
    {"principals_evicted_total", "counter",
     "Principals forgotten early, over limits.max-idle-principals.",
     &server_stats::principals_evicted},
    {"tls_failures_total", "counter", "Connections closed for TLS failures.",
     &server_stats::tls_failures},
    {"cluster_sent_total", "counter", "Messages sent to other cluster nodes (once per node).",
     &server_stats::cluster_sent},
    {"cluster_received_total", "counter", "Messages received from other cluster nodes.",
     &server_stats::cluster_received},
    {"cluster_dropped_total", "counter",
     "Messages not sent to a cluster node over cluster.max-pending-bytes.",
     &server_stats::cluster_dropped},
    {"trace_records_written_total", "counter", "Trace records written.",
     &server_stats::trace_written},
    {"trace_records_dropped_total", "counter",
     "Trace records lost: the trace buffer was full or the trace file could not be written.",
     &server_stats::trace_dropped},
  };
  return defs;
}

/// Escapes a label value (backslash, quote, newline).
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void append_histogram(std::string& out, const char* name, const char* help,
                      const histogram::snapshot& h, double scale) {
  out += fmt::format("# HELP convoke_{} {}\n# TYPE convoke_{} histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    out += fmt::format("convoke_{}_bucket{{le=\"{}\"}} {}\n", name,
                       static_cast<double>(h.bounds[i]) * scale, cumulative);
  }
  cumulative += h.counts.back();
  out += fmt::format("convoke_{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
  out += fmt::format("convoke_{}_sum {}\n", name, static_cast<double>(h.sum) * scale);
  out += fmt::format("convoke_{}_count {}\n", name, cumulative);
}

} // namespace

nlohmann::json varz(const server_facts& facts, const server_config& cfg, const server_stats& s,
                    const rates& r, now_t now) {
  auto config = nlohmann::json::object();
  for (auto& e : config_entries(cfg))
    config[e.section + "." + e.name] = nlohmann::json::parse(e.value, nullptr, false);
  auto totals = nlohmann::json::object();
  for (auto& d : counter_defs())
    if (std::string_view{d.type} == "counter") {
      std::string_view n{d.name};
      totals[std::string{n.substr(0, n.size() - 6)}] = s.*d.field; // without _total
    }
  nlohmann::json out = {
    {"server_name", facts.name},
    {"version", facts.version},
    {"protocol_version", facts.protocol_version},
    {"host", facts.host},
    {"port", facts.port},
    {"admin_port", facts.admin_port},
    {"start", rfc3339(facts.started)},
    {"now", rfc3339(now.wall)},
    {"uptime_seconds", std::chrono::duration<double>(now.wall - facts.started).count()},
    {"draining", facts.draining},
    {"connections", s.connections_open},
    {"agents", s.agents},
    {"buffered_bytes", s.buffered_bytes},
    {"totals", std::move(totals)},
    {"rates",
     {{"messages_in_per_second", r.messages_in},
      {"deliveries_per_second", r.deliveries},
      {"bytes_in_per_second", r.bytes_in},
      {"bytes_out_per_second", r.bytes_out}}},
    {"config", std::move(config)},
  };
  if (facts.cluster) {
    auto peers = nlohmann::json::array();
    for (auto& p : facts.cluster->peers)
      peers.push_back({{"node", p.node},
                       {"state", p.leaving ? "leaving" : "up"},
                       {"client_addr", p.client_addr},
                       {"cluster_addr", p.cluster_addr},
                       {"boot", fmt::format("{:016x}", p.boot)},
                       {"agents", p.agents}});
    out["cluster"]
      = {{"name", facts.cluster->name}, {"node", facts.cluster->node}, {"peers", std::move(peers)}};
  }
  return out;
}

process_facts read_process_facts() {
  process_facts p;
  std::ifstream stat{"/proc/self/stat"};
  std::string text;
  if (!std::getline(stat, text))
    return p;
  // Fields after the command name (which may hold spaces), from field 3.
  auto close = text.rfind(')');
  if (close == std::string::npos)
    return p;
  std::istringstream rest{text.substr(close + 2)};
  std::vector<std::string> f{std::istream_iterator<std::string>{rest}, {}};
  if (f.size() < 22)
    return p;
  auto ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks; // utime, stime
  p.resident_bytes = std::stoull(f[21]) * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (auto* d = ::opendir("/proc/self/fd")) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.')
        ++p.open_fds;
    ::closedir(d);
    --p.open_fds; // the directory's own descriptor
  }
  p.known = true;
  return p;
}

std::string metrics(const server_facts& facts, const server_stats& s,
                    const session_registry& registry, const process_facts& proc) {
  std::string out;
  out.reserve(8192);
  out += "# HELP convoke_info The server's name and version (always 1).\n"
         "# TYPE convoke_info gauge\n";
  out += fmt::format("convoke_info{{server_name=\"{}\",version=\"{}\"}} 1\n", label(facts.name),
                     label(facts.version));
  out += "# HELP convoke_start_time_seconds Start of the server, seconds since the epoch.\n"
         "# TYPE convoke_start_time_seconds gauge\n";
  out += fmt::format("convoke_start_time_seconds {:.3f}\n",
                     std::chrono::duration<double>(facts.started.time_since_epoch()).count());
  out += "# HELP convoke_draining 1 while the server drains (shutdown, lame duck).\n"
         "# TYPE convoke_draining gauge\n";
  out += fmt::format("convoke_draining {}\n", facts.draining ? 1 : 0);
  for (auto& d : counter_defs())
    out += fmt::format("# HELP convoke_{} {}\n# TYPE convoke_{} {}\nconvoke_{} {}\n", d.name,
                       d.help, d.name, d.type, d.name, s.*d.field);
  append_histogram(out, "message_size_bytes", "Size of relayed envelopes as sent, in bytes.",
                   registry.message_bytes.read(), 1.0);
  append_histogram(out, "relay_latency_seconds",
                   "From reading a message to handing it to a receiver's connection.",
                   registry.relay_latency_ns.read(), 1e-9);
  if (proc.known) {
    out += fmt::format("# HELP process_cpu_seconds_total User and system CPU time.\n"
                       "# TYPE process_cpu_seconds_total counter\n"
                       "process_cpu_seconds_total {}\n",
                       proc.cpu_seconds);
    out += fmt::format("# HELP process_resident_memory_bytes Resident memory.\n"
                       "# TYPE process_resident_memory_bytes gauge\n"
                       "process_resident_memory_bytes {}\n",
                       proc.resident_bytes);
    out += fmt::format("# HELP process_open_fds Open file descriptors.\n"
                       "# TYPE process_open_fds gauge\n"
                       "process_open_fds {}\n",
                       proc.open_fds);
  }
  return out;
}

} // namespace convoke::server::admin
