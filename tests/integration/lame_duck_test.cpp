// Lame-duck mode with an in-process server and SDK agents over loopback:
// draining() flips at once, the port stops accepting, the agents get
// Goodbye(lame_duck) one by one over the duration, nothing the server
// accepted is lost, the server stops by itself, and agents that reconnect
// wait for the server's hint and land on a new server on the same port (a
// rolling restart).

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include "convoke/common/net.hpp"
#include "convoke/proto/rules.hpp"
#include "test_agent.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

/// What one agent saw: its lame-duck Goodbye and its next connect.
struct sighting {
  steady::time_point goodbye_at;
  disconnect_info info;
  std::optional<steady::time_point> reconnected_at;
};

class sightings {
public:
  void goodbye(const std::string& who, const disconnect_info& d) {
    std::lock_guard lock{mtx_};
    if (d.code == proto::codes::lame_duck && seen_.count(who) == 0)
      seen_[who] = {steady::now(), d, std::nullopt};
  }
  void connected(const std::string& who) {
    std::lock_guard lock{mtx_};
    if (auto i = seen_.find(who); i != seen_.end() && !i->second.reconnected_at)
      i->second.reconnected_at = steady::now();
  }
  std::map<std::string, sighting> snapshot() const {
    std::lock_guard lock{mtx_};
    return seen_;
  }

private:
  mutable std::mutex mtx_;
  std::map<std::string, sighting> seen_;
};

bool can_connect(uint16_t port) {
  auto fd = net::tcp_connect("127.0.0.1", port, 1s);
  if (!fd)
    return false;
  ::close(*fd);
  return true;
}

} // namespace

TEST(LameDuck, AgentsLeaveOneByOneNothingIsLostAndTheyReconnectAfterTheHint) {
  constexpr auto grace = 300ms;
  constexpr auto duration = 2400ms;
  auto cfg = test_config();
  cfg.lame_duck_grace = grace;
  cfg.lame_duck_duration = duration;
  server::server srv1{cfg};
  ASSERT_TRUE(srv1.start());
  auto port = srv1.port();
  EXPECT_FALSE(srv1.draining());

  sightings seen;
  event_log log;
  // The receiver and two idle agents reconnect; the sender does not (it
  // exits 0 on its Goodbye).
  std::atomic<uint64_t> received{0};
  lambda_agent rx{"rx", &log};
  rx.on_msg = [&](const message&) { ++received; };
  lambda_agent tx{"tx", &log};
  std::vector<std::unique_ptr<lambda_agent>> idle;
  for (int i = 0; i < 2; ++i)
    idle.push_back(std::make_unique<lambda_agent>("idle-" + std::to_string(i), &log));
  std::vector<lambda_agent*> all{&rx, &tx};
  for (auto& a : idle)
    all.push_back(a.get());
  for (auto* a : all) {
    auto name = a->name();
    a->on_disconnected = [&seen, name](const disconnect_info& d) { seen.goodbye(name, d); };
    a->on_connected = [&seen, name](const session_info&) { seen.connected(name); };
  }
  // Traffic up to the sender's own close: every 2 ms a message to rx.
  std::atomic<bool> sending{false};
  tx.on_connected = [&](const session_info&) {
    sending = true;
    (void) tx.every(2ms, [&] { (void) tx.send_to("rx", "m"); });
  };
  runtime rt;
  for (auto* a : all) {
    auto opts = local_options(port);
    opts.reconnect.enabled = a != &tx;
    opts.reconnect.initial_delay = 5s; // the backoff: the hint must win over it
    opts.reconnect.max_delay = 5s;
    rt.start(*a, opts);
  }
  ASSERT_TRUE(log.wait([&](auto& ev) { return std::count(ev.begin(), ev.end(), "connect") == 4; }));
  ASSERT_TRUE(eventually([&] { return received.load() >= 20; }));

  auto started = steady::now();
  srv1.lame_duck();
  srv1.lame_duck(); // idempotent
  EXPECT_TRUE(srv1.draining()) << "/readyz says 503 from the first moment";
  EXPECT_FALSE(can_connect(port)) << "the listening socket is closed at once";

  // A new server takes the port while the old one sends its agents away.
  auto cfg2 = test_config();
  cfg2.port = port;
  server::server srv2{cfg2};
  ASSERT_TRUE(srv2.start()) << "the port is free again for the next server";

  ASSERT_TRUE(eventually([&] { return srv1.lame_duck_finished(); }, duration + 2s));
  srv1.wait(); // returns once lame duck has closed everybody
  auto stopped = steady::now();
  EXPECT_TRUE(srv1.lame_duck_finished());
  EXPECT_LT(stopped - started, duration + 1500ms) << "stops by itself within the duration";

  auto s = seen.snapshot();
  ASSERT_EQ(s.size(), 4u) << "every agent got Goodbye(lame_duck)";
  std::vector<steady::time_point> times;
  for (auto& [who, x] : s) {
    EXPECT_GE(x.goodbye_at - started, grace - 20ms) << who << ": not during the grace";
    EXPECT_LE(x.goodbye_at - started, duration + 500ms) << who;
    EXPECT_GE(x.info.reconnect_hint, 250ms) << who;
    EXPECT_LE(x.info.reconnect_hint, 250ms + duration / 10) << who;
    times.push_back(x.goodbye_at);
  }
  std::sort(times.begin(), times.end());
  for (size_t i = 1; i < times.size(); ++i)
    EXPECT_GT(times[i] - times[i - 1], 150ms)
      << "closes are spread over the duration (about 525 ms apart), not all at once";

  // Nothing the first server accepted was lost: every message routed to rx
  // reached it (the rest went nowhere, with a Notice, after rx had left).
  auto st = srv1.stats();
  EXPECT_EQ(st.dropped, 0u);
  EXPECT_GT(st.deliveries, 0u);
  ASSERT_TRUE(eventually([&] { return received.load() >= st.deliveries; }, 2s));
  EXPECT_EQ(received.load(), st.deliveries);
  EXPECT_EQ(st.messages_in, st.deliveries + st.undeliverable);

  // The reconnecting agents waited for their hint (not the 5 s backoff)
  // and are on the new server.
  ASSERT_TRUE(eventually(
    [&] {
      auto now = seen.snapshot();
      return now["rx"].reconnected_at && now["idle-0"].reconnected_at
             && now["idle-1"].reconnected_at;
    },
    5s));
  for (auto& [who, x] : seen.snapshot()) {
    if (who == "tx") {
      EXPECT_FALSE(x.info.will_reconnect);
      continue;
    }
    EXPECT_TRUE(x.info.will_reconnect) << who;
    EXPECT_EQ(x.info.retry_in, x.info.reconnect_hint) << who;
    EXPECT_GE(*x.reconnected_at - x.goodbye_at, x.info.reconnect_hint) << who;
    EXPECT_LT(*x.reconnected_at - x.goodbye_at, x.info.reconnect_hint + 1s) << who;
  }
  EXPECT_EQ(srv2.stats().agents, 3u);
  rt.stop_all();
  ASSERT_TRUE(rt.wait_for(10s).has_value());
  srv2.shutdown();
  srv2.wait();
}

TEST(LameDuck, AShutdownDuringLameDuckIsTheFastDrain) {
  auto cfg = test_config();
  cfg.lame_duck_grace = 10s; // no lame-duck close would come in this test
  cfg.lame_duck_duration = 60s;
  server::server srv{cfg};
  ASSERT_TRUE(srv.start());
  event_log log;
  lambda_agent a{"a", &log};
  disconnect_info got;
  a.on_disconnected = [&](const disconnect_info& d) { got = d; };
  runtime rt;
  auto opts = local_options(srv.port());
  opts.reconnect.enabled = false;
  rt.start(a, opts);
  ASSERT_TRUE(log.wait_for("connect"));
  srv.lame_duck();
  EXPECT_TRUE(srv.draining());
  auto t = steady::now();
  srv.shutdown();
  srv.wait();
  EXPECT_LT(steady::now() - t, 3s) << "bounded by timeouts.drain, not lame-duck.duration";
  EXPECT_FALSE(srv.lame_duck_finished());
  ASSERT_TRUE(log.wait_for("disconnect:shutdown"));
  EXPECT_EQ(got.reconnect_hint, 0ms);
  ASSERT_EQ(rt.wait_for(5s), std::optional<int>{0});
}

TEST(LameDuck, WithoutAgentsTheServerStopsAfterTheGrace) {
  auto cfg = test_config();
  cfg.lame_duck_grace = 200ms;
  cfg.lame_duck_duration = 30s;
  server::server srv{cfg};
  ASSERT_TRUE(srv.start());
  auto t = steady::now();
  srv.lame_duck();
  srv.wait();
  auto took = steady::now() - t;
  EXPECT_GE(took, 200ms) << "the grace is kept: load balancers must see /readyz fail";
  EXPECT_LT(took, 3s);
  EXPECT_TRUE(srv.lame_duck_finished());
  EXPECT_TRUE(srv.draining());
}
