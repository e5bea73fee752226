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

namespace {

/// The code of a failed check (a default code if it passed).
std::error_code code_of(const expected<>& r) {
  return r ? std::error_code{} : r.error().code;
}

} // namespace

TEST(Rules, AgentNames) {
  EXPECT_TRUE(proto::check_agent_name("planner-01.eu@host:1"));
  EXPECT_TRUE(proto::check_agent_name(std::string(64, 'a')));
  EXPECT_EQ(code_of(proto::check_agent_name("")), proto::errc::name_empty);
  EXPECT_EQ(code_of(proto::check_agent_name("has space")), proto::errc::name_invalid_character);
  EXPECT_EQ(code_of(proto::check_agent_name(std::string(65, 'a'))), proto::errc::name_too_long);
  auto accented = proto::check_agent_name("caf\xc3\xa9");
  ASSERT_FALSE(accented);
  EXPECT_EQ(accented.error().code, proto::errc::name_invalid_character);
  EXPECT_NE(accented.error().text.find("\\xc3"), std::string::npos) << accented.error().text;
}

TEST(Rules, Routes) {
  EXPECT_TRUE(proto::check_route("weather/eu.temp#1"));
  EXPECT_EQ(code_of(proto::check_route("")), proto::errc::route_empty);
  EXPECT_EQ(code_of(proto::check_route("a b")), proto::errc::route_invalid_character);
  EXPECT_EQ(code_of(proto::check_route(std::string(129, 'r'))), proto::errc::route_too_long);
  auto r = proto::check_route("tab\there");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().text.find("tab\\x09here"), std::string::npos) << r.error().text;
}

TEST(Rules, PublishedRoutesAreConcreteTokenLists) {
  EXPECT_TRUE(proto::check_route("weather.eu.paris"));
  EXPECT_TRUE(proto::check_route("weather/report")); // flat: one token
  EXPECT_TRUE(proto::check_route("a*b.c>"));         // '*' and '>' inside a token are characters
  for (auto bad : {".a", "a.", "a..b", "."})
    EXPECT_EQ(code_of(proto::check_route(bad)), proto::errc::route_empty_token) << bad;
  for (auto bad : {"*", ">", "a.*", "a.>", "*.b", "a.*.c"})
    EXPECT_EQ(code_of(proto::check_route(bad)), proto::errc::route_is_pattern) << bad;
  auto r = proto::check_route("a.*");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().text, "route 'a.*' is a pattern; patterns are only for subscriptions");
  EXPECT_EQ(code_of(proto::check_route("a b.c")), proto::errc::route_invalid_character);
}

TEST(Rules, SubscriptionsMayBePatterns) {
  for (auto ok : {"weather.eu.paris", "weather/report", "*", ">", "weather.*.paris", "weather.>",
                  "*.*", "*.>"})
    EXPECT_TRUE(proto::check_route_pattern(ok)) << ok;
  EXPECT_EQ(code_of(proto::check_route_pattern(">.a")), proto::errc::route_tail_not_last);
  EXPECT_EQ(code_of(proto::check_route_pattern("a.>.>")), proto::errc::route_tail_not_last);
  EXPECT_EQ(code_of(proto::check_route_pattern("a..*")), proto::errc::route_empty_token);
  EXPECT_EQ(code_of(proto::check_route_pattern("a.*.")), proto::errc::route_empty_token);
  EXPECT_EQ(code_of(proto::check_route_pattern("")), proto::errc::route_empty);
  EXPECT_EQ(code_of(proto::check_route_pattern(std::string(129, '*'))),
            proto::errc::route_too_long);
  EXPECT_EQ(proto::to_string(proto::errc::route_is_pattern), "route_is_pattern");
}

TEST(Rules, EnvelopesNeedConcreteRoutesSubscriptionsMayUsePatterns) {
  server::server_config cfg;
  EXPECT_FALSE(server::check_addressing("", "weather.eu.paris"));
  auto r = server::check_addressing("", "weather.*");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, "invalid_route");
  EXPECT_NE(r->text.find("pattern"), std::string::npos) << r->text;
  EXPECT_EQ(server::check_addressing("", "weather..eu")->code, "invalid_route");
  v1::Hello h;
  h.set_protocol_version(proto::protocol_version);
  h.set_agent_name("alice");
  h.add_routes("weather.>");
  h.add_routes("weather.*.paris");
  EXPECT_FALSE(server::check_hello(h, cfg));
  h.add_routes("weather.>.paris");
  EXPECT_EQ(server::check_hello(h, cfg)->code, "invalid_route");
  google::protobuf::RepeatedPtrField<std::string> subs;
  *subs.Add() = "news.>";
  EXPECT_FALSE(server::check_routes(subs));
  *subs.Add() = "news.";
  EXPECT_EQ(server::check_routes(subs)->code, "invalid_route");
}

TEST(Rules, ErrorCodesHaveACategoryNamesAndMessages) {
  std::error_code ec = proto::errc::route_too_long;
  EXPECT_STREQ(ec.category().name(), "convoke.proto");
  EXPECT_EQ(ec.message(), "route is too long");
  EXPECT_EQ(proto::to_string(proto::errc::name_invalid_character), "name_invalid_character");
  EXPECT_NE(ec,
            std::error_code(static_cast<int>(proto::errc::route_too_long), std::generic_category()))
    << "the same number in another category is another error";
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
  EXPECT_FALSE(server::check_hello(h, cfg)) << "the token is the session's to check, later";
  EXPECT_EQ(server::check_shared_token(h, cfg)->code, "auth_failed");
  h.set_token("secret");
  EXPECT_FALSE(server::check_shared_token(h, cfg));
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

TEST(Rules, NamesOfSummonerConnectionsAreReservedWhileTheListenerIsOn) {
  server::server_config cfg;
  EXPECT_FALSE(server::reserved_for_summoner(cfg, "summoner@127.0.0.1:1")) << "listener off";
  cfg.summoner_listen = "127.0.0.1:8888";
  cfg.summoner_names = {{"10.0.0.5", "tools"}};
  for (auto name : {"summoner@127.0.0.1:1", "summoner@", "tools", "tools-2", "tools-50123"})
    EXPECT_TRUE(server::reserved_for_summoner(cfg, name)) << name;
  for (auto name : {"summoner", "toolsmith", "tools-", "tools-x", "mysummoner@1", ""})
    EXPECT_FALSE(server::reserved_for_summoner(cfg, name)) << name;
  v1::Hello h;
  h.set_protocol_version(proto::protocol_version);
  h.set_agent_name("tools-3");
  auto r = server::check_hello(h, cfg);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, "invalid_name");
  EXPECT_NE(r->text.find("reserved for Summoner connections"), std::string::npos);
}
