// The admin endpoints' content without HTTP: /connz queries, sorting and
// paging, /routez, /varz and the Prometheus exposition.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "admin_views.hpp"

using namespace convoke::server;
using namespace convoke::server::admin;

namespace {

session_info_ptr agent(uint64_t id, std::string name, uint64_t in, uint64_t out,
                       std::vector<std::string> routes = {}) {
  auto a = std::make_shared<session_info>();
  a->session = id;
  a->name = std::move(name);
  a->address = "127.0.0.1:" + std::to_string(40000 + id);
  a->connected_since = std::chrono::system_clock::now() - std::chrono::seconds{id};
  a->touch(std::chrono::steady_clock::now() - std::chrono::seconds{10 - id});
  a->in_msgs.add(in);
  a->out_msgs.add(out);
  a->set_routes(std::move(routes));
  return a;
}

std::vector<session_info_ptr> fleet() {
  return {agent(1, "alice", 5, 50, {"news", "weather"}), agent(2, "bob", 30, 10, {"news"}),
          agent(3, "carol", 20, 20), agent(4, "alfred", 0, 70, {"news.*"})};
}

std::vector<std::string> names(const nlohmann::json& j) {
  std::vector<std::string> out;
  for (auto& c : j["connections"])
    out.push_back(c["name"]);
  return out;
}

connz_query query(std::multimap<std::string, std::string> p) {
  auto q = parse_connz_query(p);
  EXPECT_TRUE(q) << (q ? "" : q.error().text);
  return q ? *q : connz_query{};
}

} // namespace

TEST(AdminViews, ConnzQueryRejectsWhatItDoesNotKnowWithTheReason) {
  auto err = [](std::multimap<std::string, std::string> p) {
    auto q = parse_connz_query(p);
    return q ? std::string{"accepted"} : q.error().text;
  };
  EXPECT_NE(err({{"sort", "size"}}).find("sort: unknown key 'size'"), std::string::npos);
  EXPECT_NE(err({{"order", "up"}}).find("order: 'up'"), std::string::npos);
  EXPECT_NE(err({{"limit", "-1"}}).find("limit: '-1' is not a non-negative integer"),
            std::string::npos);
  EXPECT_NE(err({{"limit", "1001"}}).find("above 1000"), std::string::npos);
  EXPECT_NE(err({{"limit", "0"}}).find("at least 1"), std::string::npos);
  EXPECT_NE(err({{"offset", "1e3"}}).find("offset"), std::string::npos);
  EXPECT_NE(err({{"cid", "1"}}).find("unknown parameter 'cid'"), std::string::npos);
  EXPECT_NE(err({{"name", std::string(300, 'x')}}).find("longer than 256"), std::string::npos);
  EXPECT_EQ(err({{"sort", "out_msgs"}, {"order", "desc"}, {"limit", "2"}, {"offset", "1"}}),
            "accepted");
}

TEST(AdminViews, ConnzSortsPagesAndFilters) {
  auto now = now_t::read();
  EXPECT_EQ(names(connz(fleet(), query({}), now)),
            (std::vector<std::string>{"alice", "bob", "carol", "alfred"})); // by session
  EXPECT_EQ(names(connz(fleet(), query({{"sort", "name"}}), now)),
            (std::vector<std::string>{"alfred", "alice", "bob", "carol"}));
  EXPECT_EQ(names(connz(fleet(), query({{"sort", "out_msgs"}, {"order", "desc"}}), now)),
            (std::vector<std::string>{"alfred", "alice", "carol", "bob"}));
  EXPECT_EQ(names(connz(fleet(), query({{"sort", "in_msgs"}}), now)),
            (std::vector<std::string>{"alfred", "alice", "carol", "bob"}));
  // idle: agent 1 was active longest ago.
  EXPECT_EQ(names(connz(fleet(), query({{"sort", "idle"}, {"order", "desc"}}), now)).front(),
            "alice");
  // uptime: agent 4 connected first.
  EXPECT_EQ(names(connz(fleet(), query({{"sort", "uptime"}, {"order", "desc"}}), now)).front(),
            "alfred");
  auto page = connz(fleet(), query({{"sort", "name"}, {"offset", "1"}, {"limit", "2"}}), now);
  EXPECT_EQ(names(page), (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(page["total"], 4);
  EXPECT_EQ(page["offset"], 1);
  EXPECT_EQ(page["limit"], 2);
  EXPECT_TRUE(connz(fleet(), query({{"offset", "10"}}), now)["connections"].empty());
  auto al = connz(fleet(), query({{"name", "al"}}), now);
  EXPECT_EQ(names(al), (std::vector<std::string>{"alice", "alfred"}));
  EXPECT_EQ(al["total"], 2);
}

TEST(AdminViews, ConnzRowsCarryTheAgentsFacts) {
  auto now = now_t::read();
  auto a = agent(7, "dora", 3, 4, {"z", "a"});
  a->identity = "ops";
  a->sdk = "convoke-cpp";
  a->sdk_version = "1.2.3";
  a->in_bytes.add(300);
  a->out_bytes.add(400);
  a->pending_bytes.set(99);
  a->dropped.add(2);
  auto row = connz({a}, connz_query{}, now)["connections"][0];
  EXPECT_EQ(row["session"], 7);
  EXPECT_EQ(row["address"], "127.0.0.1:40007");
  EXPECT_EQ(row["identity"], "ops");
  EXPECT_EQ(row["sdk"], "convoke-cpp");
  EXPECT_EQ(row["sdk_version"], "1.2.3");
  EXPECT_EQ(row["in_msgs"], 3);
  EXPECT_EQ(row["in_bytes"], 300);
  EXPECT_EQ(row["out_msgs"], 4);
  EXPECT_EQ(row["out_bytes"], 400);
  EXPECT_EQ(row["pending_bytes"], 99);
  EXPECT_EQ(row["dropped"], 2);
  EXPECT_EQ(row["routes"], (std::vector<std::string>{"a", "z"}));
  EXPECT_NEAR(row["uptime_seconds"].get<double>(), 7.0, 0.5);
  EXPECT_NEAR(row["idle_seconds"].get<double>(), 3.0, 0.5);
  EXPECT_EQ(row["connected_since"].get<std::string>().size(), 27u); // ....000000Z
}

TEST(AdminViews, RoutezCountsSubscribersAndEveryBroadcastAgents) {
  auto r = routez(fleet());
  EXPECT_EQ(r["total"], 3);
  EXPECT_EQ(r["every_broadcast"], 1); // carol has no subscriptions
  EXPECT_EQ(r["routes"][0]["route"], "news");
  EXPECT_EQ(r["routes"][0]["subscribers"], 2);
  EXPECT_EQ(r["routes"][1]["route"], "news.*");
  EXPECT_EQ(r["routes"][2]["route"], "weather");
  EXPECT_EQ(r["routes"][2]["subscribers"], 1);
}

TEST(AdminViews, TimesAreRfc3339UtcAsInLogsAndTraces) {
  std::chrono::system_clock::time_point t{std::chrono::milliseconds{1796040000123}};
  EXPECT_EQ(rfc3339(t), "2026-11-30T12:00:00.123000Z");
}

TEST(AdminViews, HistogramPutsValuesInTheFirstBucketAtOrAboveThem) {
  histogram h{{10, 100, 1000}};
  for (uint64_t v : {0u, 10u, 11u, 100u, 999u, 1000u, 1001u, 5000u})
    h.observe(v);
  auto s = h.read();
  EXPECT_EQ(s.counts, (std::vector<uint64_t>{2, 2, 2, 2}));
  EXPECT_EQ(s.count, 8u);
  EXPECT_EQ(s.sum, 0u + 10 + 11 + 100 + 999 + 1000 + 1001 + 5000);
  EXPECT_THROW((histogram{{5, 1}}), std::invalid_argument);
}

TEST(AdminViews, VarzRedactsTheTokenAndReportsTotalsAndRates) {
  server_config cfg;
  cfg.token = "s3cret-token-value";
  server_stats s;
  s.messages_in = 42;
  s.deliveries = 84;
  s.agents = 2;
  server_facts facts{"relay-1",
                     "9.9.9",
                     2,
                     "127.0.0.1",
                     7420,
                     7421,
                     std::chrono::system_clock::now() - std::chrono::seconds{5},
                     true};
  auto v = varz(facts, cfg, s, rates{10, 20, 30, 40}, now_t::read());
  auto text = v.dump();
  EXPECT_EQ(text.find("s3cret"), std::string::npos);
  EXPECT_EQ(v["config"]["auth.token"], "<redacted>");
  EXPECT_EQ(v["config"]["listen.port"], 7420);
  EXPECT_EQ(v["config"]["trace.enabled"], true);
  EXPECT_EQ(v["totals"]["messages_in"], 42);
  EXPECT_EQ(v["totals"]["deliveries"], 84);
  EXPECT_EQ(v["agents"], 2);
  EXPECT_EQ(v["draining"], true);
  EXPECT_EQ(v["rates"]["deliveries_per_second"], 20.0);
  EXPECT_NEAR(v["uptime_seconds"].get<double>(), 5.0, 0.5);
  EXPECT_EQ(v["server_name"], "relay-1");
}

TEST(AdminViews, MetricsFollowTheTextExpositionFormat) {
  server_stats s;
  s.messages_in = 3;
  s.connections_open = 2;
  session_registry reg;
  for (uint64_t b : {10u, 100u, 5000u, 1u << 20})
    reg.message_bytes.observe(b);
  reg.relay_latency_ns.observe(30'000);         // 30 µs
  reg.relay_latency_ns.observe(20'000'000'000); // 20 s: +Inf
  server_facts facts{"a\"b", "1.0", 2, "h", 1, 2, std::chrono::system_clock::now(), false};
  auto text = metrics(facts, s, reg, process_facts{});
  std::istringstream in{text};
  std::map<std::string, std::string> type_of;
  std::map<std::string, double> value;
  for (std::string line; std::getline(in, line);) {
    ASSERT_FALSE(line.empty());
    if (line.rfind("# TYPE ", 0) == 0) {
      auto rest = line.substr(7);
      auto sp = rest.find(' ');
      type_of[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    if (line[0] == '#')
      continue;
    auto sp = line.rfind(' ');
    value[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  EXPECT_EQ(type_of["convoke_messages_in_total"], "counter");
  EXPECT_EQ(type_of["convoke_connections"], "gauge");
  EXPECT_EQ(type_of["convoke_message_size_bytes"], "histogram");
  EXPECT_EQ(value["convoke_messages_in_total"], 3);
  EXPECT_EQ(value["convoke_connections"], 2);
  EXPECT_EQ(value["convoke_info{server_name=\"a\\\"b\",version=\"1.0\"}"], 1);
  // Buckets are cumulative and end at the count.
  EXPECT_EQ(value["convoke_message_size_bytes_bucket{le=\"64\"}"], 1);
  EXPECT_EQ(value["convoke_message_size_bytes_bucket{le=\"256\"}"], 2);
  EXPECT_EQ(value["convoke_message_size_bytes_bucket{le=\"+Inf\"}"], 4);
  EXPECT_EQ(value["convoke_message_size_bytes_count"], 4);
  EXPECT_EQ(value["convoke_relay_latency_seconds_bucket{le=\"5e-05\"}"], 1);
  EXPECT_EQ(value["convoke_relay_latency_seconds_bucket{le=\"10\"}"], 1);
  EXPECT_EQ(value["convoke_relay_latency_seconds_bucket{le=\"+Inf\"}"], 2);
  EXPECT_NEAR(value["convoke_relay_latency_seconds_sum"], 20.00003, 1e-9);
  EXPECT_EQ(value.count("process_resident_memory_bytes"), 0u); // not known here
}

TEST(AdminViews, ProcessFactsAreReadFromProc) {
  auto p = read_process_facts();
  ASSERT_TRUE(p.known);
  EXPECT_GT(p.resident_bytes, 1u << 20);
  EXPECT_GE(p.open_fds, 3u);
  EXPECT_GE(p.cpu_seconds, 0.0);
}
