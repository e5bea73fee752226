// Logins against an in-process server with a credentials file: the delay
// of a failed login, the per-address throttle, and what a shared token
// does.

#include <gtest/gtest.h>

#include <fstream>

#include "convoke/proto/codec.hpp"
#include "credentials.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

struct credentials_file {
  temp_dir dir;
  std::string path = dir.file("credentials.toml");
  std::string token = server::generate_token();
  std::string slow_token = server::generate_token();

  credentials_file() {
    server::identity id;
    id.name = "alice";
    id.names = {"alice"};
    id.rights = server::rights::all();
    id.token_hash = server::hash_token(token).value();
    std::ofstream out{path};
    out << server::format_identity(id) << "\n";
    id.name = "slow";
    id.names = {"slow", "slow.*"};
    id.token_hash = server::hash_token(slow_token).value();
    id.limits.messages_per_second = 5;
    out << server::format_identity(id);
  }
};

} // namespace

TEST(ServerAuth, AFailedLoginIsAnsweredOnlyAfterTheConfiguredDelay) {
  credentials_file creds;
  test_server srv{[&](auto& cfg) {
    cfg.credentials = creds.path;
    cfg.failed_login_delay = 400ms;
  }};
  raw_client c{srv.port()};
  auto start = std::chrono::steady_clock::now();
  auto r = c.login("alice", {}, std::string(64, 'f'));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "auth_failed");
  EXPECT_GE(took, 400ms) << "the answer came before auth.failed-login-delay";
  EXPECT_TRUE(c.wait_closed(2s));
  // The right token is welcomed (and costs no delay).
  raw_client ok{srv.port()};
  EXPECT_TRUE(ok.login("alice", {}, creds.token).has_welcome());
  EXPECT_EQ(srv.stats().auth_failures, 1u);
}

TEST(ServerAuth, AnAddressThatFailsTooOftenIsRefusedEvenWithTheRightToken) {
  credentials_file creds;
  test_server srv{[&](auto& cfg) {
    cfg.credentials = creds.path;
    cfg.failed_login_delay = 0ms;
    cfg.failed_login_limit = 3;
    cfg.failed_login_window = 60s;
  }};
  for (int i = 0; i < 3; ++i) {
    raw_client c{srv.port()};
    EXPECT_EQ(c.login("alice", {}, std::string(64, 'f')).notice().code(), "auth_failed");
  }
  raw_client c{srv.port()};
  auto r = c.login("alice", {}, creds.token);
  ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "auth_throttled");
  EXPECT_NE(r.notice().text().find("too many failed logins from 127.0.0.1; try again in"),
            std::string::npos)
    << r.notice().text();
  EXPECT_EQ(srv.stats().auth_throttled, 1u);
  EXPECT_EQ(srv.stats().auth_failures, 3u);
}

TEST(ServerAuth, TheSharedTokenIsCheckedAndAWrongOneIsDelayedToo) {
  test_server srv{[&](auto& cfg) {
    cfg.token = "a-shared-secret-of-some-length";
    cfg.failed_login_delay = 200ms;
  }};
  raw_client bad{srv.port()};
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(bad.login("x", {}, "guess").notice().code(), "auth_failed");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  raw_client good{srv.port()};
  EXPECT_TRUE(good.login("x", {}, "a-shared-secret-of-some-length").has_welcome());
}

TEST(ServerAuth, RateLimitsFollowTheIdentityNotTheAddress) {
  credentials_file creds;
  test_server srv{[&](auto& cfg) {
    cfg.credentials = creds.path;
    cfg.quarantine_after = 0;
  }};
  // Two connections of "slow" share its 5 messages a second; "alice", from
  // the same address, has no limit.
  raw_client slow1{srv.port()}, slow2{srv.port()}, alice{srv.port()};
  ASSERT_TRUE(slow1.login("slow", {}, creds.slow_token).has_welcome());
  ASSERT_TRUE(slow2.login("slow.2", "slow", creds.slow_token).has_welcome());
  ASSERT_TRUE(alice.login("alice", {}, creds.token).has_welcome());
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(slow1.send_envelope("alice", "s1", "", static_cast<uint64_t>(i + 1)));
    ASSERT_TRUE(slow2.send_envelope("alice", "s2", "", static_cast<uint64_t>(i + 1)));
    ASSERT_TRUE(alice.send_envelope("slow", "a", "", static_cast<uint64_t>(i + 1)));
  }
  ASSERT_TRUE(slow1.ping());
  ASSERT_TRUE(slow2.ping());
  ASSERT_TRUE(alice.ping());
  int to_alice = 0;
  while (auto d = alice.read_delivery(300ms))
    ++to_alice;
  // 5 a second, burst 5, shared by both connections of "slow" (20 sent);
  // a slow run may refill a token or two meanwhile.
  EXPECT_LE(to_alice, 8);
  EXPECT_GE(to_alice, 5);
  int to_slow = 0;
  std::optional<v1::Notice> limited;
  while (auto f = slow1.read(300ms)) {
    if (f->has_delivery())
      ++to_slow;
    if (f->has_notice() && !limited)
      limited = f->notice();
  }
  EXPECT_EQ(to_slow, 10) << "alice is not limited by slow's rate";
  if (!limited) // both connections share the bucket: either may have hit it first
    limited = slow2.read_kind(v1::Frame::kNotice, 2s).value_or(v1::Frame{}).notice();
  EXPECT_EQ(limited->code(), "rate_limited");
  EXPECT_GT(limited->retry_after_ms(), 0u);
  EXPECT_NE(limited->text().find("identity:slow"), std::string::npos) << limited->text();
}
