// server::reload_config from another thread while agents relay (what
// SIGHUP does on the main thread): sessions keep the configuration they
// started with, new ones take the new one, the listener's limits and the
// multiplexer's own state follow, and nothing is lost. In-process, so the
// ThreadSanitizer run (scripts/sanitize tsan) checks the publication.

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "convoke/server/config.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

std::string envelopes(int count, const std::string& to) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    v1::Frame f;
    f.mutable_envelope()->set_recipient(to);
    f.mutable_envelope()->set_payload(std::string(64, 'p'));
    proto::append_frame(f, out);
  }
  return out;
}

} // namespace

TEST(ServerReload, NewSessionsTakeTheReloadedLimitsWhileRelayingGoesOn) {
  test_server srv;
  raw_client pub{srv.port()};
  ASSERT_TRUE(pub.hello("pub").has_welcome());
  raw_client sub{srv.port()};
  ASSERT_TRUE(sub.hello("sub").has_welcome());
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> received{0};
  std::atomic<bool> stop{false};
  std::jthread reader{[&] {
    while (!stop || received < sent)
      if (sub.read_delivery(200ms))
        ++received;
      else if (stop)
        return;
  }};
  std::jthread writer{[&] {
    auto batch = envelopes(50, "sub");
    while (!stop) {
      if (!eventually([&] { return stop || sent - received < 1000; }, 10s) || stop)
        return;
      if (!pub.send_bytes(batch))
        return;
      sent += 50;
    }
  }};
  // A failed ASSERT below must not leave the threads running forever.
  struct stopper {
    std::atomic<bool>& flag;
    ~stopper() {
      flag = true;
    }
  } stop_on_exit{stop};
  ASSERT_TRUE(eventually([&] { return received > 2000; }, 10s));

  // Reloads from this thread while the relay runs, each published at once.
  auto& s = srv.get();
  for (uint32_t i = 1; i <= 20; ++i) {
    auto read = *s.current_config();
    read.max_frame_bytes = (64u << 10) + i * 1024;
    read.max_agents = 100 + i;
    auto r = s.reload_config(read);
    ASSERT_TRUE(r.errors.empty());
    ASSERT_EQ(r.changes.size(), 2u);
    raw_client probe{srv.port()};
    auto w = probe.hello("probe");
    ASSERT_TRUE(w.has_welcome()) << w.ShortDebugString();
    EXPECT_EQ(w.welcome().limits().max_frame_bytes(), read.max_frame_bytes);
  }
  EXPECT_EQ(s.current_config()->max_agents, 120u);
  EXPECT_EQ(s.config().max_agents, 10000u) << "config() is the configuration at start";

  // A reload whose keys do not fit together changes nothing (tls.key
  // without the tls.cert of a plaintext server).
  auto bad = *s.current_config();
  bad.tls_key = "/etc/convoke/server.key";
  bad.max_agents = 7;
  auto refused = s.reload_config(bad);
  ASSERT_EQ(refused.errors.size(), 1u);
  EXPECT_NE(refused.errors[0].text.find("need tls.cert"), std::string::npos)
    << refused.errors[0].text;
  EXPECT_EQ(s.current_config()->max_agents, 120u);
  EXPECT_TRUE(s.current_config()->tls_key.empty());

  // limits.max-agents counts from the next registration: pub and sub are
  // registered (the probes left), so a limit of 2 refuses a third agent.
  auto tight = *s.current_config();
  tight.max_agents = 2;
  ASSERT_TRUE(s.reload_config(tight).errors.empty());
  ASSERT_TRUE(eventually([&] { return srv.stats().agents == 2; }, 5s));
  raw_client over{srv.port()};
  auto full = over.hello("over");
  ASSERT_TRUE(full.has_notice()) << full.ShortDebugString();
  EXPECT_EQ(full.notice().code(), "server_full");

  stop = true;
  writer.join();
  reader.join();
  EXPECT_EQ(received.load(), sent.load());
  srv.stop();
  EXPECT_EQ(srv.stats().dropped, 0u);
}

TEST(ServerReload, ALoweredFailedLoginLimitAppliesAtTheNextConnection) {
  test_server srv{[](server::server_config& c) {
    c.token = "right";
    c.failed_login_delay = 0ms;
    c.failed_login_limit = 100;
  }};
  raw_client first{srv.port()};
  EXPECT_EQ(first.login("a", "", "wrong").notice().code(), "auth_failed");
  auto lowered = *srv.get().current_config();
  lowered.failed_login_limit = 1;
  ASSERT_TRUE(srv.get().reload_config(lowered).errors.empty());
  // One failure is already counted: the limit of 1 is reached.
  raw_client second{srv.port()};
  EXPECT_EQ(second.login("b", "", "right").notice().code(), "auth_throttled");
  srv.stop();
}
