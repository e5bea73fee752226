// End to end: the admin endpoints of a real convoke-server process, read
// over HTTP while agents talk; /metrics is checked by Prometheus' own
// promtool (Debian's prometheus package).

#include <gtest/gtest.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::string admin_get(const server_process& srv, const std::string& path, int* status = nullptr) {
  httplib::Client c{"127.0.0.1", srv.admin_port};
  c.set_read_timeout(5);
  auto r = c.Get(path);
  if (!r)
    return "no answer: " + httplib::to_string(r.error());
  if (status)
    *status = r->status;
  return r->body;
}

/// The value of a sample line `name value` (or -1).
double sample(const std::string& metrics, const std::string& name) {
  auto at = metrics.find("\n" + name + " ");
  if (at == std::string::npos)
    return -1;
  return std::stod(metrics.substr(at + name.size() + 2));
}

} // namespace

TEST(AdminEndToEnd, PromtoolAcceptsTheMetricsOfAServerUnderTraffic) {
  server_process srv;
  ASSERT_NE(srv.admin_port, 0) << "the admin port file was not written";
  raw_client alice{srv.port};
  ASSERT_TRUE(alice.hello("alice", {"news"}).has_welcome());
  raw_client bob{srv.port};
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(bob.send_envelope({}, std::string(static_cast<size_t>(100 * i), 'x'), "news"));
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(alice.read_delivery()) << i;
  std::string metrics;
  ASSERT_TRUE(eventually([&] {
    metrics = admin_get(srv, "/metrics");
    return sample(metrics, "convoke_relay_latency_seconds_count") >= 1;
  }))
    << metrics;
  EXPECT_EQ(sample(metrics, "convoke_messages_in_total"), 20);
  EXPECT_EQ(sample(metrics, "convoke_deliveries_total"), 20);
  EXPECT_EQ(sample(metrics, "convoke_message_size_bytes_count"), 20);
  EXPECT_EQ(sample(metrics, "convoke_agents"), 2);
  EXPECT_GT(sample(metrics, "process_resident_memory_bytes"), 1 << 20);
  process promtool{{"/usr/bin/promtool", "check", "metrics"}, metrics};
  auto rc = promtool.wait(30s);
  ASSERT_TRUE(rc) << "promtool did not finish";
  EXPECT_EQ(*rc, 0) << promtool.out() << promtool.err();
  EXPECT_EQ(promtool.out() + promtool.err(), "") << "promtool's lint found problems";
}

TEST(AdminEndToEnd, ProbesAndViewsAnswerAndTheServerSaysWhereTheyAre) {
  server_process srv;
  int status = 0;
  EXPECT_EQ(json::parse(admin_get(srv, "/healthz", &status))["status"], "ok");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(json::parse(admin_get(srv, "/readyz", &status))["status"], "ready");
  raw_client alice{srv.port};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  auto connz = json::parse(admin_get(srv, "/connz"));
  ASSERT_EQ(connz["connections"].size(), 1u);
  EXPECT_EQ(connz["connections"][0]["name"], "alice");
  auto varz = json::parse(admin_get(srv, "/varz"));
  EXPECT_EQ(varz["port"], srv.port);
  EXPECT_EQ(varz["config"]["admin.port"], 0);
  EXPECT_TRUE(srv.proc->wait_output(
    "admin listening url=http://127.0.0.1:" + std::to_string(srv.admin_port) + "/", 5s))
    << srv.proc->err();
}
