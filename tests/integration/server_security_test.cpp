// Attacks an outside audit ran against the server, as regression tests: each
// one succeeded before its fix.

#include <gtest/gtest.h>

#include <set>

#include "convoke/proto/codec.hpp"
#include "mt19937_predictor.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"

using namespace convoke;
using namespace convoke::test;

TEST(ServerSecurity, ResumeTokensCannotBePredictedFromEarlierOnes) {
  // The audit's session hijack: collect tokens from ~160 Welcomes, rebuild
  // the generator, predict the victim's token and take over its name.
  test_server srv;
  std::set<std::string> tokens;
  int probes = 0;
  auto guess = predict_next_token([&] {
    raw_client probe{srv.port()};
    auto w = probe.hello("probe-" + std::to_string(probes++));
    EXPECT_TRUE(w.has_welcome()) << w.ShortDebugString();
    auto& token = w.welcome().resume_token();
    EXPECT_GE(token.size(), 64u) << "a resume token carries at least 256 bits";
    EXPECT_TRUE(tokens.insert(token).second) << "tokens repeat";
    return token;
  });
  ASSERT_FALSE(guess.empty());

  raw_client victim{srv.port()};
  auto vw = victim.hello("victim");
  ASSERT_TRUE(vw.has_welcome());
  EXPECT_NE(vw.welcome().resume_token(), guess) << "the victim's token was predicted";

  raw_client attacker{srv.port()};
  auto r = attacker.hello("victim", {}, guess);
  ASSERT_TRUE(r.has_notice()) << "the attacker took over the victim's name: "
                              << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "name_taken");
  // The victim is still connected and reachable.
  auto other = raw_client{srv.port()};
  ASSERT_TRUE(other.hello("bystander").has_welcome());
  ASSERT_TRUE(other.send_envelope("victim", "still yours"));
  auto e = victim.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "still yours");
}

TEST(ServerSecurity, ATokenOfTheRightLengthButWrongContentDoesNotTakeOver) {
  test_server srv;
  raw_client alice{srv.port()};
  auto w = alice.hello("alice");
  ASSERT_TRUE(w.has_welcome());
  auto token = w.welcome().resume_token();
  for (size_t pos : {size_t{0}, token.size() / 2, token.size() - 1}) {
    auto wrong = token;
    wrong[pos] = wrong[pos] == '0' ? '1' : '0';
    raw_client thief{srv.port()};
    auto r = thief.hello("alice", {}, wrong);
    ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
    EXPECT_EQ(r.notice().code(), "name_taken");
    EXPECT_EQ(r.notice().text().find("session"), std::string::npos)
      << "the refusal must not reveal the holder's session: " << r.notice().text();
  }
  raw_client thief{srv.port()};
  EXPECT_TRUE(thief.hello("alice", {}, token + "00").has_notice()) << "prefix match";
  EXPECT_TRUE(thief.wait_closed(2s));
}
