// Lame-duck mode's schedule with a fake clock: the grace, closes spread
// evenly over the rest of the duration, agents arriving and leaving, the
// end, the reconnect hint. No actor, no socket.

#include <gtest/gtest.h>

#include <vector>

#include "convoke/server/config.hpp"
#include "lame_duck.hpp"

using namespace std::chrono_literals;
using convoke::server::lame_duck_plan;

namespace {

const lame_duck_plan::time_point t0{std::chrono::seconds{1000}};

/// Runs a plan the way the router does (a tick at every next_check) with
/// `agents` open at the start; returns the time of every close.
std::vector<lame_duck_plan::time_point> run(lame_duck_plan& p, size_t agents) {
  std::vector<lame_duck_plan::time_point> closes;
  auto now = t0;
  size_t open = agents;
  for (int ticks = 0; ticks < 100000 && open > 0; ++ticks) {
    auto n = p.due(now, open);
    for (size_t i = 0; i < n; ++i)
      closes.push_back(now);
    open -= n;
    now = p.next_check(now, open);
  }
  return closes;
}

} // namespace

TEST(LameDuckPlan, NothingClosesDuringTheGrace) {
  lame_duck_plan p{t0, 5s, 30s};
  EXPECT_EQ(p.closing_begins(), t0 + 5s);
  EXPECT_EQ(p.ends(), t0 + 30s);
  EXPECT_EQ(p.due(t0, 10), 0u);
  EXPECT_EQ(p.due(t0 + 4999ms, 10), 0u);
  EXPECT_EQ(p.next_check(t0 + 4900ms, 10), t0 + 5s) << "wakes at the end of the grace";
  EXPECT_EQ(p.next_check(t0, 10), t0 + lame_duck_plan::max_tick) << "and checks meanwhile";
}

TEST(LameDuckPlan, ClosesAreSpreadEvenlyOverTheWindow) {
  // 4 agents over [5 s, 25 s]: the middles of four 5 s slots.
  lame_duck_plan p{t0, 5s, 25s};
  auto closes = run(p, 4);
  ASSERT_EQ(closes.size(), 4u);
  std::vector<std::chrono::milliseconds> want{7500ms, 12500ms, 17500ms, 22500ms};
  for (size_t i = 0; i < 4; ++i) {
    auto at = std::chrono::duration_cast<std::chrono::milliseconds>(closes[i] - t0);
    EXPECT_NEAR(static_cast<double>(at.count()), static_cast<double>(want[i].count()), 2.0) << i;
  }
}

TEST(LameDuckPlan, ManyAgentsAreClosedInGroupsPerTick) {
  lame_duck_plan p{t0, 1s, 11s};
  auto closes = run(p, 10000);
  ASSERT_EQ(closes.size(), 10000u);
  EXPECT_GE(closes.front(), t0 + 1s);
  EXPECT_LE(closes.back(), t0 + 11s);
  // About 1000 per second (each 250 ms tick closes a group of ~250).
  size_t in_first_second = 0;
  for (auto t : closes)
    in_first_second += t < t0 + 2s;
  EXPECT_NEAR(static_cast<double>(in_first_second), 1000.0, 260.0);
}

TEST(LameDuckPlan, EveryoneStillOpenIsDueAtTheEnd) {
  lame_duck_plan p{t0, 1s, 3s};
  EXPECT_EQ(p.due(t0 + 3s, 7), 7u);
  EXPECT_EQ(p.due(t0 + 10s, 2), 2u) << "agents that came late too";
  EXPECT_EQ(p.due(t0 + 10s, 0), 0u);
}

TEST(LameDuckPlan, LateArrivalsAreFittedIntoTheRestOfTheWindow) {
  lame_duck_plan p{t0, 0ms, 10s};
  // One agent: its close is due at 5 s (the middle).
  EXPECT_EQ(p.due(t0 + 4900ms, 1), 0u);
  EXPECT_EQ(p.due(t0 + 5s, 1), 1u);
  // Three more registered since: spread over the remaining 5 s, none late.
  auto now = t0 + 5s;
  size_t open = 3;
  std::vector<lame_duck_plan::time_point> closes;
  while (open > 0) {
    now = p.next_check(now, open);
    auto n = p.due(now, open);
    for (size_t i = 0; i < n; ++i)
      closes.push_back(now);
    open -= n;
  }
  ASSERT_EQ(closes.size(), 3u);
  EXPECT_GT(closes[0], t0 + 5s);
  EXPECT_LT(closes[0], closes[1]);
  EXPECT_LT(closes[1], closes[2]);
  EXPECT_LE(closes[2], t0 + 10s);
}

TEST(LameDuckPlan, ChecksAreBoundedSoNewAgentsAreNoticed) {
  lame_duck_plan p{t0, 0ms, 60s};
  // One agent: its close is 30 s away, but the router checks every 250 ms.
  EXPECT_EQ(p.next_check(t0, 1), t0 + lame_duck_plan::max_tick);
  EXPECT_EQ(p.next_check(t0, 0), t0 + lame_duck_plan::max_tick);
  // Many: never a busy loop.
  lame_duck_plan q{t0, 0ms, 1s};
  EXPECT_EQ(q.next_check(t0, 1'000'000), t0 + lame_duck_plan::min_tick);
}

TEST(LameDuckPlan, ReconnectHintsAreJitteredWithinBounds) {
  lame_duck_plan p{t0, 5s, 30s}; // window 25 s: jitter up to 2.5 s
  EXPECT_EQ(p.reconnect_hint(0), lame_duck_plan::min_hint);
  EXPECT_EQ(p.reconnect_hint(2500), lame_duck_plan::min_hint + 2500ms);
  EXPECT_EQ(p.reconnect_hint(2501), lame_duck_plan::min_hint);
  for (uint64_t r : {1ull, 77ull, 123456789ull, ~0ull}) {
    auto h = p.reconnect_hint(r);
    EXPECT_GE(h, lame_duck_plan::min_hint);
    EXPECT_LE(h, lame_duck_plan::min_hint + 2500ms);
  }
  lame_duck_plan long_one{t0, 0ms, std::chrono::hours{1}};
  EXPECT_LE(long_one.reconnect_hint(~0ull), lame_duck_plan::min_hint + lame_duck_plan::max_jitter);
}

TEST(LameDuckConfig, KeysParseAndTheGraceMustBeShorterThanTheDuration) {
  using namespace convoke::server;
  server_config cfg;
  EXPECT_EQ(cfg.lame_duck_duration, 30s);
  EXPECT_EQ(cfg.lame_duck_grace, 5s);
  ASSERT_TRUE(set_option(cfg, "lame-duck.duration", "2m"));
  ASSERT_TRUE(set_option(cfg, "lame-duck.grace", "0s")) << "no grace is allowed";
  EXPECT_EQ(cfg.lame_duck_duration, 120s);
  EXPECT_EQ(cfg.lame_duck_grace, 0s);
  EXPECT_TRUE(validate(cfg).empty());
  EXPECT_FALSE(set_option(cfg, "lame-duck.duration", "0s")) << "closes need some time";
  EXPECT_FALSE(set_option(cfg, "lame-duck.grace", "soon"));
  ASSERT_TRUE(set_option(cfg, "lame-duck.grace", "2m"));
  auto errs = validate(cfg);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].text.find("lame-duck.grace (2m) must be shorter than lame-duck.duration (2m)"),
            std::string::npos)
    << errs[0].text;
}
