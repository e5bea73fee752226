// Rate limits and quarantine by principal, and per-address connection
// counts (rate_limits.hpp), with a fake clock.
#include <gtest/gtest.h>

#include "rate_limits.hpp"

using namespace convoke::server;
using namespace std::chrono_literals;

namespace {

using verdict = rate_decision::verdict;

const rate_limits::time_point t0{1h};

rate_limit_settings messages(double per_second, double burst, uint32_t quarantine_after = 0) {
  rate_limit_settings s;
  s.messages_per_second = per_second;
  s.messages_burst = burst;
  s.quarantine_after = quarantine_after;
  s.quarantine_window = 10s;
  s.quarantine_for = 30s;
  return s;
}

} // namespace

TEST(TokenBucket, BurstThenRateAndTheWaitForTheNextToken) {
  token_bucket b;
  b.configure(10, 5, t0);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(b.has(1));
    b.take(1);
  }
  EXPECT_FALSE(b.has(1));
  EXPECT_EQ(b.wait_for(1), 100ms);
  b.refill(t0 + 50ms);
  EXPECT_FALSE(b.has(1));
  EXPECT_EQ(b.wait_for(1), 50ms);
  b.refill(t0 + 100ms);
  EXPECT_TRUE(b.has(1));
  b.refill(t0 + 1h);
  EXPECT_DOUBLE_EQ(b.tokens(), 5) << "never more than the burst";
  EXPECT_TRUE(b.full());
}

TEST(TokenBucket, ARateOfZeroIsUnlimited) {
  token_bucket b;
  b.configure(0, 0, t0);
  EXPECT_TRUE(b.unlimited());
  EXPECT_TRUE(b.has(1e12));
  EXPECT_EQ(b.wait_for(1e12), 0ns);
}

TEST(RateLimitSettings, BurstRuleFromTheConfiguration) {
  server_config cfg;
  EXPECT_FALSE(rate_limit_settings::from_config(cfg).limited()) << "unlimited by default";
  cfg.messages_per_second = 100;
  cfg.bytes_per_second = 1000;
  auto s = rate_limit_settings::from_config(cfg);
  EXPECT_TRUE(s.limited());
  EXPECT_EQ(s.messages_burst, 100) << "one second's worth";
  EXPECT_EQ(s.bytes_burst, cfg.max_frame_bytes) << "at least one frame of the largest size";
  cfg.bytes_per_second = 4 << 20;
  cfg.messages_burst = 7;
  s = rate_limit_settings::from_config(cfg);
  EXPECT_EQ(s.bytes_burst, 4 << 20);
  EXPECT_EQ(s.messages_burst, 7);
}

TEST(RateLimits, MessagesAreSharedByAllSessionsOfAPrincipalAndRefusalsSayWhenToRetry) {
  rate_limits reg;
  auto a = reg.admit("addr:10.0.0.1", messages(10, 3), 1, t0);
  auto b = reg.admit("addr:10.0.0.1", messages(10, 3), 2, t0);
  ASSERT_NE(a.entry, nullptr);
  ASSERT_EQ(a.entry, b.entry) << "one principal, two sessions";
  auto other = reg.admit("addr:10.0.0.2", messages(10, 3), 3, t0);
  EXPECT_EQ(reg.take(*a.entry, 100, t0).what, verdict::pass);
  EXPECT_EQ(reg.take(*b.entry, 100, t0).what, verdict::pass);
  EXPECT_EQ(reg.take(*a.entry, 100, t0).what, verdict::pass);
  auto d = reg.take(*b.entry, 100, t0);
  EXPECT_EQ(d.what, verdict::limited);
  EXPECT_EQ(d.limit, limit_kind::messages);
  EXPECT_EQ(d.retry_after, 100ms);
  EXPECT_TRUE(d.breach);
  EXPECT_EQ(reg.take(*other.entry, 100, t0).what, verdict::pass) << "another principal";
  EXPECT_EQ(reg.take(*a.entry, 100, t0 + 100ms).what, verdict::pass) << "refilled";
}

TEST(RateLimits, BytesAreCheckedPerEnvelopeAndARefusalTakesNoMessageToken) {
  rate_limits reg;
  rate_limit_settings s;
  s.messages_per_second = 1000;
  s.messages_burst = 1000;
  s.bytes_per_second = 1000;
  s.bytes_burst = 1000;
  auto p = reg.admit("alice", s, 1, t0).entry;
  EXPECT_EQ(reg.take(*p, 600, t0).what, verdict::pass);
  auto d = reg.take(*p, 600, t0);
  EXPECT_EQ(d.what, verdict::limited);
  EXPECT_EQ(d.limit, limit_kind::bytes);
  EXPECT_EQ(d.retry_after, 200ms) << "200 bytes missing at 1000 bytes/s";
  EXPECT_EQ(reg.take(*p, 400, t0).what, verdict::pass) << "exactly what is left";
  EXPECT_NEAR(p->messages.tokens(), 998, 1e-9) << "the refused envelope took no message token";
}

TEST(RateLimits, AtMostOneBreachPerSecondAndQuarantineAfterTheConfiguredNumber) {
  rate_limits reg;
  auto p = reg.admit("flood", messages(1, 1, 3), 1, t0).entry;
  EXPECT_EQ(reg.take(*p, 10, t0).what, verdict::pass);
  int breaches = 0;
  for (int i = 0; i < 100; ++i)
    breaches += reg.take(*p, 10, t0 + std::chrono::milliseconds{i}).breach;
  EXPECT_EQ(breaches, 1) << "a flood within one second is one breach";
  EXPECT_EQ(p->breaches, 1u);
  // The envelope that arrives as a token is there passes (not a breach).
  EXPECT_EQ(reg.take(*p, 10, t0 + 1s).what, verdict::pass);
  auto d = reg.take(*p, 10, t0 + 1s + 1ms);
  EXPECT_TRUE(d.breach);
  EXPECT_EQ(d.what, verdict::limited);
  d = reg.take(*p, 10, t0 + 1s + 500ms);
  EXPECT_EQ(d.what, verdict::limited);
  EXPECT_FALSE(d.breach) << "less than a second after the last breach";
  EXPECT_FALSE(reg.take(*p, 10, t0 + 1s + 999ms).breach);
  EXPECT_EQ(reg.take(*p, 10, t0 + 2s + 1ms).what, verdict::pass);
  d = reg.take(*p, 10, t0 + 2s + 2ms);
  ASSERT_TRUE(d.breach);
  EXPECT_EQ(d.what, verdict::quarantined) << "the third breach within 10 s";
  EXPECT_TRUE(d.quarantine_started);
  EXPECT_EQ(d.retry_after, 30s);
  // Everything is refused meanwhile, with the time left; nothing restarts it.
  d = reg.take(*p, 10, t0 + 12s + 2ms);
  EXPECT_EQ(d.what, verdict::quarantined);
  EXPECT_FALSE(d.quarantine_started);
  EXPECT_EQ(d.retry_after, 20s);
}

TEST(RateLimits, BreachesOutsideTheWindowDoNotQuarantine) {
  rate_limits reg;
  auto p = reg.admit("slow-flood", messages(1, 1, 3), 1, t0).entry;
  // One breach every 6 s: never three within the 10 s window of the first.
  for (int i = 0; i < 10; ++i) {
    auto t = t0 + std::chrono::seconds{6 * i};
    EXPECT_EQ(reg.take(*p, 10, t).what, verdict::pass);
    auto d = reg.take(*p, 10, t + 1ms);
    EXPECT_TRUE(d.breach);
    ASSERT_EQ(d.what, verdict::limited) << "quarantined at breach " << i;
  }
}

TEST(RateLimits, AQuarantinedPrincipalIsRefusedFromAnyConnectionUntilItEnds) {
  rate_limits reg;
  auto s = messages(1, 1, 1);
  auto p = reg.admit("addr:10.0.0.9", s, 1, t0).entry;
  ASSERT_EQ(reg.take(*p, 10, t0).what, verdict::pass);
  auto d = reg.take(*p, 10, t0 + 1ms);
  ASSERT_TRUE(d.quarantine_started);
  EXPECT_EQ(p->sessions, std::vector<uint64_t>{1}) << "the sessions to close";
  reg.release(*p, 1, t0 + 2ms);
  auto again = reg.admit("addr:10.0.0.9", s, 2, t0 + 10s);
  EXPECT_EQ(again.entry, nullptr);
  EXPECT_EQ(again.quarantine_left, 20s + 1ms);
  EXPECT_EQ(reg.quarantine_left("addr:10.0.0.9", t0 + 10s), 20s + 1ms);
  EXPECT_EQ(reg.admit("addr:10.0.0.10", s, 3, t0 + 10s).entry != nullptr, true)
    << "only that principal";
  auto later = reg.admit("addr:10.0.0.9", s, 4, t0 + 30s + 1ms);
  ASSERT_NE(later.entry, nullptr) << "accepted once the quarantine is over";
  EXPECT_EQ(reg.take(*later.entry, 10, t0 + 30s + 1ms).what, verdict::pass);
  EXPECT_FALSE(reg.quarantine_left("addr:10.0.0.9", t0 + 30s + 1ms));
}

TEST(RateLimits, SettingsArePerPrincipalAndTakenAtEachSessionStart) {
  rate_limits reg;
  auto strict = reg.admit("strict", messages(1, 1), 1, t0).entry;
  auto relaxed = reg.admit("relaxed", messages(1000, 1000), 2, t0).entry;
  EXPECT_EQ(reg.take(*strict, 1, t0).what, verdict::pass);
  EXPECT_EQ(reg.take(*strict, 1, t0).what, verdict::limited);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(reg.take(*relaxed, 1, t0).what, verdict::pass);
  // New settings with a new session (e.g. a changed credentials file).
  auto again = reg.admit("strict", messages(1000, 1000), 3, t0 + 1ms).entry;
  EXPECT_EQ(again, strict);
  EXPECT_EQ(again->settings.messages_per_second, 1000);
  EXPECT_EQ(reg.take(*again, 1, t0 + 2ms).what, verdict::pass);
}

TEST(RateLimits, IdlePrincipalsAreSweptOnceStaleNeverWhileConnectedOrQuarantined) {
  rate_limits reg;
  auto s = messages(10, 10, 1);
  auto busy = reg.admit("busy", s, 1, t0).entry;
  auto quiet = reg.admit("quiet", s, 2, t0).entry;
  auto bad = reg.admit("bad", s, 3, t0).entry;
  for (int i = 0; i < 10; ++i)
    reg.take(*quiet, 1, t0);
  for (int i = 0; i < 11; ++i)
    reg.take(*bad, 1, t0);
  ASSERT_TRUE(reg.quarantine_left("bad", t0));
  reg.release(*quiet, 2, t0);
  reg.release(*bad, 3, t0);
  EXPECT_EQ(reg.idle(), 2u);
  reg.sweep(t0 + 500ms);
  EXPECT_EQ(reg.size(), 3u) << "the quiet one's bucket is not full yet: forgetting it would "
                               "hand it a fresh burst";
  reg.sweep(t0 + 1s);
  EXPECT_EQ(reg.size(), 2u) << "stale: exactly what a new entry would be";
  EXPECT_FALSE(reg.quarantine_left("quiet", t0 + 1s));
  reg.sweep(t0 + 29s);
  EXPECT_EQ(reg.size(), 2u) << "quarantined";
  reg.sweep(t0 + 31s);
  EXPECT_EQ(reg.size(), 1u);
  EXPECT_EQ(reg.take(*busy, 1, t0 + 1h).what, verdict::pass) << "connected: kept";
  EXPECT_EQ(reg.evicted(), 0u);
}

TEST(RateLimits, SweepsRunByThemselvesFromAdmitAndRelease) {
  rate_limits reg;
  auto s = messages(10, 10);
  for (uint64_t i = 0; i < 1000; ++i) {
    auto p = reg.admit("p" + std::to_string(i), s, i, t0).entry;
    reg.release(*p, i, t0);
  }
  EXPECT_EQ(reg.size(), 1000u) << "within sweep_interval of the last sweep";
  auto p = reg.admit("late", s, 5000, t0 + rate_limits::sweep_interval);
  EXPECT_EQ(reg.size(), 1u) << "the stale ones went with the next call after the interval";
  EXPECT_NE(p.entry, nullptr);
}

TEST(RateLimits, BeyondTheCapTheLeastRecentlyActiveIdlePrincipalIsEvicted) {
  rate_limits reg{2};
  auto s = messages(1, 1, 1);
  // Three quarantined principals (never stale within the test).
  for (uint64_t i = 0; i < 3; ++i) {
    auto name = "q" + std::to_string(i);
    auto p = reg.admit(name, s, i, t0).entry;
    reg.take(*p, 1, t0);
    ASSERT_TRUE(reg.take(*p, 1, t0).quarantine_started);
    reg.release(*p, i, t0 + std::chrono::milliseconds{i});
  }
  EXPECT_EQ(reg.idle(), 2u);
  EXPECT_EQ(reg.evicted(), 1u);
  EXPECT_FALSE(reg.quarantine_left("q0", t0 + 1s)) << "the oldest idle one went";
  EXPECT_TRUE(reg.quarantine_left("q1", t0 + 1s));
  EXPECT_TRUE(reg.quarantine_left("q2", t0 + 1s));
}

TEST(RateLimits, ReleasingAnUnknownSessionOrTwiceIsHarmless) {
  rate_limits reg;
  auto p = reg.admit("x", messages(1, 1), 1, t0).entry;
  reg.admit("x", messages(1, 1), 2, t0);
  reg.release(*p, 1, t0);
  reg.release(*p, 7, t0);
  EXPECT_EQ(p->sessions, std::vector<uint64_t>{2});
  EXPECT_EQ(reg.idle(), 0u);
  reg.release(*p, 2, t0);
  EXPECT_EQ(reg.idle(), 1u);
}

TEST(AddressCounts, CountsPerAddressUpToTheLimitAndForgetsClosedOnes) {
  address_counts c;
  EXPECT_TRUE(c.admit("10.0.0.1", 2));
  EXPECT_TRUE(c.admit("10.0.0.1", 2));
  EXPECT_FALSE(c.admit("10.0.0.1", 2));
  EXPECT_TRUE(c.admit("10.0.0.2", 2)) << "another address";
  EXPECT_EQ(c.open("10.0.0.1"), 2u);
  c.release("10.0.0.1");
  EXPECT_TRUE(c.admit("10.0.0.1", 2));
  c.release("10.0.0.1");
  c.release("10.0.0.1");
  c.release("10.0.0.2");
  EXPECT_EQ(c.addresses(), 0u) << "memory follows the open connections";
  EXPECT_TRUE(c.admit("10.0.0.3", 0)) << "0: unlimited";
  EXPECT_EQ(c.addresses(), 1u);
}
