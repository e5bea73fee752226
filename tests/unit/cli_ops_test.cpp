// The operator commands' logic (client/cli/ops.hpp): admin URLs, /connz and
// /varz JSON into rows, paging, the server check's verdicts, rates for `top`
// and the tables. JSON text in, values out: no server, no HTTP.

#include <gtest/gtest.h>

#include "ops.hpp"

using namespace convoke::cli;

namespace {

const char* connz_body = R"({
  "now": "2026-11-30T12:00:00.000Z", "total": 3, "offset": 0, "limit": 2,
  "connections": [
    {"session": 3, "name": "alice", "address": "127.0.0.1:50312", "identity": "", "role": "",
     "sdk": "convoke-cpp", "sdk_version": "0.9.0", "tls": false,
     "connected_since": "2026-11-30T11:59:47.900Z", "uptime_seconds": 12.1,
     "last_activity": "2026-11-30T11:59:59.800Z", "idle_seconds": 0.2,
     "in_msgs": 10, "in_bytes": 1234, "out_msgs": 20, "out_bytes": 4567,
     "pending_bytes": 0, "dropped": 1, "routes": ["weather", "news.*"]},
    {"session": 7, "name": "bob", "address": "127.0.0.1:50400", "sdk": "", "uptime_seconds": 4000,
     "idle_seconds": 75, "in_msgs": 12345, "out_msgs": 0, "pending_bytes": 1536,
     "dropped": 0, "routes": [], "future_field": {"x": 1}}
  ]})";

const char* varz_body = R"({
  "server_name": "convoke", "version": "0.9.0", "protocol_version": 2,
  "uptime_seconds": 3725.5, "draining": false,
  "config": {"limits.max-agents": 100, "auth.token": "<redacted>"},
  "connections": 4, "agents": 3,
  "totals": {"messages_in": 120, "deliveries": 300, "dropped": 2},
  "rates": {"messages_in_per_second": 1.5, "deliveries_per_second": 3.0,
            "bytes_in_per_second": 2048.0, "bytes_out_per_second": 0.0}})";

http_answer ok(std::string body) {
  return {200, std::move(body), {}};
}

} // namespace

TEST(CliOps, AdminUrlsTakeSchemeHostAndPortOnly) {
  auto a = parse_admin_url("http://127.0.0.1:7421");
  ASSERT_TRUE(a) << a.error().text;
  EXPECT_FALSE(a->https);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7421);
  auto b = parse_admin_url("https://admin.example:8443/");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->https);
  EXPECT_EQ(b->url(), "https://admin.example:8443");
  auto c = parse_admin_url("localhost");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->url(), "http://localhost:7421");
  auto d = parse_admin_url("[::1]:9000");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->host, "::1");
  EXPECT_EQ(d->url(), "http://[::1]:9000");
  for (auto bad : {"", "ftp://x:1", "http://x:0", "http://x:70000", "http://x:12a",
                   "http://x:7421/varz", "http://user@x:1", "::1:7421", "http://[::1", "x:"}) {
    auto r = parse_admin_url(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.error().text.find("invalid admin URL"), std::string::npos) << r.error().text;
    }
  }
}

TEST(CliOps, ConnzRowsCarryEveryColumnAndIgnoreUnknownFields) {
  auto p = parse_connz(connz_body);
  ASSERT_TRUE(p) << p.error().text;
  EXPECT_EQ(p->total, 3u);
  EXPECT_EQ(p->limit, 2u);
  ASSERT_EQ(p->connections.size(), 2u);
  auto& a = p->connections[0];
  EXPECT_EQ(a.session, 3u);
  EXPECT_EQ(a.name, "alice");
  EXPECT_EQ(a.address, "127.0.0.1:50312");
  EXPECT_EQ(a.sdk, "convoke-cpp");
  EXPECT_EQ(a.sdk_version, "0.9.0");
  EXPECT_DOUBLE_EQ(a.uptime_seconds, 12.1);
  EXPECT_EQ(a.in_msgs, 10u);
  EXPECT_EQ(a.out_bytes, 4567u);
  EXPECT_EQ(a.dropped, 1u);
  EXPECT_EQ(a.routes, (std::vector<std::string>{"weather", "news.*"}));
  EXPECT_NE(a.json.find("\"name\":\"alice\""), std::string::npos) << a.json;
  EXPECT_EQ(p->connections[1].pending_bytes, 1536u);
}

TEST(CliOps, HostileConnzBodiesAreErrorsNamingTheField) {
  struct bad_case {
    const char* body;
    const char* says;
  };
  for (auto c : std::vector<bad_case>{
         {"", "did not answer with a JSON object"},
         {"[1,2]", "did not answer with a JSON object"},
         {"<html>oops</html>", "did not answer with a JSON object"},
         {R"({"total": 1})", "'connections'"},
         {R"({"connections": [{"name": 5}]})", "'name' is not a string"},
         {R"({"connections": [{"in_msgs": -3}]})", "'in_msgs' is not a non-negative integer"},
         {R"({"connections": [{"in_msgs": "7"}]})", "'in_msgs'"},
         {R"({"connections": [{"routes": "weather"}]})", "'routes' is not an array"},
         {R"({"connections": [{"routes": [1]}]})", "'routes' holds a non-string"},
         {R"({"connections": [3]})", "not an object"},
         {R"({"total": -1, "connections": []})", "'total'"},
       }) {
    auto p = parse_connz(c.body);
    ASSERT_FALSE(p) << c.body;
    EXPECT_NE(p.error().text.find(c.says), std::string::npos) << c.body << ": " << p.error().text;
  }
}

TEST(CliOps, PagesAreCollectedUntilTheTotalWithoutDuplicates) {
  page_collector pages;
  auto page = [](uint64_t total, uint64_t offset, std::vector<uint64_t> sessions) {
    connz_page p;
    p.total = total;
    p.offset = offset;
    for (auto s : sessions) {
      agent_row r;
      r.session = s;
      p.connections.push_back(r);
    }
    return p;
  };
  EXPECT_TRUE(pages.add(page(5, 0, {1, 2})));
  EXPECT_EQ(pages.offset(), 2u);
  // An agent left between the requests: session 2 shifted onto this page;
  // the offset reached the new total.
  EXPECT_FALSE(pages.add(page(4, 2, {2, 4})));
  ASSERT_EQ(pages.rows().size(), 3u);
  EXPECT_EQ(pages.rows()[2].session, 4u);
  page_collector empty;
  EXPECT_FALSE(empty.add(page(9, 0, {}))) << "an empty page ends the listing";
}

TEST(CliOps, ConnzQueryAsksTheServerToSortAndFilter) {
  EXPECT_EQ(connz_query("name", "", 0, 100), "/connz?sort=name&order=asc&offset=0&limit=100");
  EXPECT_EQ(connz_query("in_msgs", "team a&b", 200, 100),
            "/connz?sort=in_msgs&order=desc&offset=200&limit=100&name=team%20a%26b");
}

TEST(CliOps, CheckIsOkWithAgentsUptimeAndPerformanceData) {
  auto r = evaluate_check("http://127.0.0.1:7421", ok(R"({"status":"ok"})"),
                          ok(R"({"status":"ready"})"), ok(varz_body), {});
  EXPECT_EQ(r.status, check_status::ok);
  EXPECT_EQ(r.line.rfind("OK: convoke 0.9.0 ready agents=3 connections=4 uptime=1h02m", 0), 0u)
    << r.line;
  EXPECT_NE(r.line.find("| agents=3;;;0;100 connections=4;;;0 messages_in=120c"), std::string::npos)
    << r.line;
  EXPECT_EQ(r.line.find('\n'), std::string::npos);
}

TEST(CliOps, CheckIsCriticalWhenTheServerCannotBeReached) {
  http_answer refused{0, {}, "Could not establish connection"};
  auto r = evaluate_check("http://127.0.0.1:9", refused, refused, refused, {});
  EXPECT_EQ(r.status, check_status::critical);
  EXPECT_EQ(r.line, "CRITICAL: cannot reach convoke admin at http://127.0.0.1:9/healthz: Could not "
                    "establish connection");
  auto sick = evaluate_check("http://h:1", {500, R"({"error":"boom"})", {}}, {}, {}, {});
  EXPECT_EQ(sick.status, check_status::critical);
  EXPECT_NE(sick.line.find("/healthz answered 500: boom"), std::string::npos) << sick.line;
}

TEST(CliOps, DrainingIsAWarningOrOnRequestCritical) {
  http_answer draining{503, R"({"status":"draining"})", {}};
  auto w = evaluate_check("u", ok("{}"), draining, ok(varz_body), {});
  EXPECT_EQ(w.status, check_status::warning);
  EXPECT_NE(w.line.find("WARNING: convoke 0.9.0 draining"), std::string::npos) << w.line;
  check_thresholds t;
  t.draining_critical = true;
  EXPECT_EQ(evaluate_check("u", ok("{}"), draining, ok(varz_body), t).status,
            check_status::critical);
}

TEST(CliOps, ThresholdsRaiseTheWorstStatus) {
  check_thresholds t;
  t.connections_warn = 4;
  auto w = evaluate_check("u", ok("{}"), ok("{}"), ok(varz_body), t);
  EXPECT_EQ(w.status, check_status::warning);
  EXPECT_NE(w.line.find("connections 4 >= 4"), std::string::npos) << w.line;
  EXPECT_NE(w.line.find("connections=4;4;;0"), std::string::npos) << w.line;
  t.connections_critical = 3;
  EXPECT_EQ(evaluate_check("u", ok("{}"), ok("{}"), ok(varz_body), t).status,
            check_status::critical);
  check_thresholds few;
  few.agents_min = 5;
  auto c = evaluate_check("u", ok("{}"), ok("{}"), ok(varz_body), few);
  EXPECT_EQ(c.status, check_status::critical);
  EXPECT_NE(c.line.find("agents 3 < 5"), std::string::npos) << c.line;
  // 95 of limits.max-agents 100: warn; 100: critical.
  std::string near = varz_body;
  near.replace(near.find("\"agents\": 3"), 11, "\"agents\": 95");
  EXPECT_EQ(evaluate_check("u", ok("{}"), ok("{}"), ok(near), {}).status, check_status::warning);
  std::string full = varz_body;
  full.replace(full.find("\"agents\": 3"), 11, "\"agents\": 100");
  auto f = evaluate_check("u", ok("{}"), ok("{}"), ok(full), {});
  EXPECT_EQ(f.status, check_status::critical);
  EXPECT_NE(f.line.find("new agents are refused"), std::string::npos) << f.line;
}

TEST(CliOps, CheckIsUnknownWhenVarzCannotBeRead) {
  auto denied
    = evaluate_check("u", ok("{}"), ok("{}"), {401, R"({"error":"unauthorized"})", {}}, {});
  EXPECT_EQ(denied.status, check_status::unknown);
  EXPECT_NE(denied.line.find("--identity"), std::string::npos) << denied.line;
  EXPECT_EQ(evaluate_check("u", ok("{}"), ok("{}"), ok("not json"), {}).status,
            check_status::unknown);
  EXPECT_EQ(evaluate_check("u", ok("{}"), {404, "", {}}, ok(varz_body), {}).status,
            check_status::unknown);
}

TEST(CliOps, NumbersDurationsAndSizesAreShort) {
  EXPECT_EQ(format_age(0.2), "200ms");
  EXPECT_EQ(format_age(1.25), "1.2s");
  EXPECT_EQ(format_age(12.9), "12s");
  EXPECT_EQ(format_age(245), "4m05s");
  EXPECT_EQ(format_age(3725.5), "1h02m");
  EXPECT_EQ(format_age(3 * 86400 + 4 * 3600 + 5), "3d04h");
  EXPECT_EQ(format_age(-1), "-");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1234), "1.23k");
  EXPECT_EQ(format_count(12345), "12.3k");
  EXPECT_EQ(format_count(999999), "1.00M");
  EXPECT_EQ(format_count(4560000), "4.56M");
  EXPECT_EQ(format_rate(0), "0");
  EXPECT_EQ(format_rate(0.5), "0.5");
  EXPECT_EQ(format_rate(250), "250");
  EXPECT_EQ(format_rate(12345), "12.3k");
  EXPECT_EQ(format_bytes(512), "512B");
  EXPECT_EQ(format_bytes(1536), "1.50KiB");
  EXPECT_EQ(format_bytes(3.5 * 1024 * 1024), "3.50MiB");
}

TEST(CliOps, AgentsTableHasOneAlignedRowPerAgent) {
  auto p = parse_connz(connz_body);
  ASSERT_TRUE(p);
  auto text = agents_table(p->connections).render();
  EXPECT_EQ(text, "NAME   ADDRESS          SDK                CONNECTED   IDLE  IN MSGS  OUT MSGS  "
                  "PENDING  DROPPED  ROUTES\n"
                  "alice  127.0.0.1:50312  convoke-cpp/0.9.0        12s  200ms       10        20  "
                  "     0B        1  news.*,weather\n"
                  "bob    127.0.0.1:50400  -                      1h06m  1m15s    12.3k         0  "
                  "1.50KiB        0  (all)\n");
  auto first = agents_table(p->connections).render(1);
  EXPECT_EQ(first.find("bob"), std::string::npos) << first;
  EXPECT_EQ(first.substr(first.size() - 11), "... 1 more\n") << first;
}

TEST(CliOps, TopRatesComeFromTwoSnapshotsOfTheSameSession) {
  agent_row a;
  a.session = 1;
  a.name = "a";
  a.uptime_seconds = 10;
  a.in_msgs = 100;
  a.out_msgs = 5;
  agent_row b = a;
  b.session = 2;
  b.name = "b";
  auto a2 = a;
  a2.uptime_seconds = 12; // two seconds later, by the server's clock
  a2.in_msgs = 300;
  a2.out_msgs = 5;
  agent_row c; // new since the first snapshot
  c.session = 3;
  c.name = "c";
  c.uptime_seconds = 0.5;
  auto b2 = b;
  b2.session = 2;
  b2.uptime_seconds = 10; // the same uptime (no time passed): fallback
  b2.in_msgs = 110;
  auto rows = compute_rates({a, b}, {b2, c, a2}, 1.0);
  ASSERT_EQ(rows.size(), 3u);
  ASSERT_TRUE(sort_top(rows, "in_rate"));
  EXPECT_EQ(rows[0].row.name, "a");
  EXPECT_DOUBLE_EQ(*rows[0].in_rate, 100.0);
  EXPECT_DOUBLE_EQ(*rows[0].out_rate, 0.0);
  EXPECT_EQ(rows[1].row.name, "b");
  EXPECT_DOUBLE_EQ(*rows[1].in_rate, 10.0);
  EXPECT_EQ(rows[2].row.name, "c");
  EXPECT_FALSE(rows[2].in_rate) << "no rate without an earlier snapshot";
  ASSERT_TRUE(sort_top(rows, "name"));
  EXPECT_EQ(rows[0].row.name, "a");
  EXPECT_EQ(rows[2].row.name, "c");
  EXPECT_FALSE(sort_top(rows, "bogus"));
  auto text = top_table(rows).render();
  EXPECT_NE(text.find("IN/S"), std::string::npos);
  EXPECT_NE(text.find("  100  "), std::string::npos) << text;
}

TEST(CliOps, TopHeaderSummarisesVarz) {
  auto v = parse_varz(varz_body);
  ASSERT_TRUE(v) << v.error().text;
  EXPECT_EQ(v->max_agents, 100u);
  EXPECT_EQ(v->totals["dropped"], 2u);
  auto h = top_header("http://127.0.0.1:7421", *v);
  EXPECT_EQ(h, "convoke 0.9.0 at http://127.0.0.1:7421  uptime 1h02m  agents 3  connections 4\n"
               "messages in 1.5/s  deliveries 3.0/s  bytes in 2.00KiB/s  out 0B/s  totals: in 120 "
               "delivered 300 dropped 2\n");
}
