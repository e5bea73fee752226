// Protocol rules: names, routes, Hello checks, backoff.
#include <gtest/gtest.h>

#include <set>

#include <random>

#include "backoff.hpp"
#include "convoke/common/secure_random.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "session_rules.hpp"

using namespace convoke;
using namespace std::chrono_literals;

TEST(Rules, AgentNames) {
  EXPECT_EQ(proto::check_agent_name("planner-01.eu@host:1"), "");
  EXPECT_NE(proto::check_agent_name(""), "");
  EXPECT_NE(proto::check_agent_name("has space"), "");
  EXPECT_NE(proto::check_agent_name(std::string(65, 'a')), "");
  EXPECT_EQ(proto::check_agent_name(std::string(64, 'a')), "");
  EXPECT_NE(proto::check_agent_name("caf\xc3\xa9").find("\\xc3"), std::string::npos);
}

TEST(Rules, Routes) {
  EXPECT_EQ(proto::check_route("weather/eu.temp#1"), "");
  EXPECT_NE(proto::check_route(""), "");
  EXPECT_NE(proto::check_route("a b"), "");
  EXPECT_NE(proto::check_route(std::string(129, 'r')), "");
}

TEST(Rules, HelloChecks) {
  server::server_config cfg;
  v1::Hello h;
  h.set_protocol_version(proto::protocol_version);
  h.set_agent_name("alice");
  EXPECT_FALSE(server::check_hello(h, cfg));
  h.set_protocol_version(1); // version 1 clients would misread relayed frames
  EXPECT_EQ(server::check_hello(h, cfg)->code, "unsupported_version");
  EXPECT_NE(server::check_hello(h, cfg)->text.find("upgrade"), std::string::npos);
  h.set_protocol_version(3);
  EXPECT_EQ(server::check_hello(h, cfg)->code, "unsupported_version");
  h.set_protocol_version(proto::protocol_version);
  h.add_routes("bad route");
  EXPECT_EQ(server::check_hello(h, cfg)->code, "invalid_route");
  h.clear_routes();
  cfg.token = "secret";
  EXPECT_EQ(server::check_hello(h, cfg)->code, "auth_failed");
  h.set_token("secret");
  EXPECT_FALSE(server::check_hello(h, cfg));
}

TEST(SecureRandom, SecretsCompareByContentAndLength) {
  EXPECT_TRUE(crypto::equal_constant_time("secret", "secret"));
  EXPECT_FALSE(crypto::equal_constant_time("secret", "secreT"));
  EXPECT_FALSE(crypto::equal_constant_time("secret", "secret2"));
  EXPECT_FALSE(crypto::equal_constant_time("secret", ""));
  EXPECT_TRUE(crypto::equal_constant_time("", ""));
}

TEST(SecureRandom, TokensAndIdsAreLongAndDistinct) {
  std::set<std::string> tokens;
  std::set<uint64_t> ids;
  for (int i = 0; i < 1000; ++i) {
    auto t = crypto::random_hex(32);
    ASSERT_EQ(t.size(), 64u);
    ASSERT_EQ(t.find_first_not_of("0123456789abcdef"), std::string::npos);
    tokens.insert(t);
    auto id = crypto::random_nonzero_u64();
    ASSERT_NE(id, 0u);
    ids.insert(id);
  }
  EXPECT_EQ(tokens.size(), 1000u);
  EXPECT_EQ(ids.size(), 1000u);
}

TEST(Backoff, GrowsExponentiallyUpToTheCapWithJitter) {
  reconnect_policy p;
  p.initial_delay = 100ms;
  p.max_delay = 2000ms;
  p.multiplier = 2.0;
  p.jitter = 0.2;
  std::mt19937_64 rng{1};
  for (int attempt = 1; attempt <= 10; ++attempt) {
    auto base = std::min(100.0 * (1 << (attempt - 1)), 2000.0);
    for (int k = 0; k < 50; ++k) {
      auto d = detail::backoff_delay(p, attempt, rng).count();
      EXPECT_GE(d, static_cast<int64_t>(base * 0.8) - 1) << attempt;
      EXPECT_LE(d, static_cast<int64_t>(base * 1.2) + 1) << attempt;
    }
  }
  p.jitter = 0;
  EXPECT_EQ(detail::backoff_delay(p, 1, rng), 100ms);
  EXPECT_EQ(detail::backoff_delay(p, 3, rng), 400ms);
  EXPECT_EQ(detail::backoff_delay(p, 30, rng), 2000ms);
}
