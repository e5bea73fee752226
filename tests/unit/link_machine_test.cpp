// The agent's link state machine with a fake clock: handshake deadline,
// watchdog, stale generations, reconnect policy, stop. No actor, no socket.

#include <gtest/gtest.h>

#include "convoke/proto/rules.hpp"
#include "link_machine.hpp"

using namespace convoke;
using namespace std::chrono_literals;
using convoke::detail::link_machine;
using state = link_machine::state;

namespace {

const link_machine::time_point t0{std::chrono::seconds{1000}};

client_options options() {
  client_options o;
  o.connect_timeout = 5s;
  o.reconnect.initial_delay = 100ms;
  o.reconnect.max_delay = 1s;
  return o;
}

session_info session(std::chrono::milliseconds heartbeat, std::chrono::milliseconds idle) {
  session_info s;
  s.heartbeat_interval = heartbeat;
  s.idle_timeout = idle;
  return s;
}

/// A machine with a session established at t0 (heartbeat 100 ms, idle 500).
link_machine established(client_options o = options()) {
  link_machine m{o, 42};
  auto g = m.connect();
  EXPECT_TRUE(m.connected(g, t0));
  EXPECT_TRUE(m.welcome(session(100ms, 500ms), t0));
  return m;
}

} // namespace

TEST(LinkMachine, ConnectHandshakeAndWelcome) {
  link_machine m{options(), 1};
  EXPECT_EQ(m.current(), state::idle);
  auto g = m.connect();
  EXPECT_EQ(m.current(), state::connecting);
  auto deadline = m.connected(g, t0);
  ASSERT_TRUE(deadline);
  EXPECT_EQ(*deadline, t0 + 5s);
  EXPECT_EQ(m.current(), state::handshaking);
  EXPECT_TRUE(m.handshake_expired(g)) << "the timer firing while handshaking expires it";
  auto watchdog = m.welcome(session(100ms, 500ms), t0 + 10ms);
  ASSERT_TRUE(watchdog);
  EXPECT_EQ(*watchdog, t0 + 110ms);
  EXPECT_TRUE(m.connected());
  EXPECT_FALSE(m.handshake_expired(g)) << "a Welcome in time cancels the deadline";
  EXPECT_FALSE(m.welcome(session(100ms, 500ms), t0)) << "a second Welcome changes nothing";
}

TEST(LinkMachine, NoWatchdogWithoutHeartbeats) {
  link_machine m{options(), 1};
  auto g = m.connect();
  ASSERT_TRUE(m.connected(g, t0));
  EXPECT_FALSE(m.welcome(session(0ms, 500ms), t0));
  EXPECT_TRUE(m.connected());
}

TEST(LinkMachine, MessagesOfOlderGenerationsAreStale) {
  link_machine m{options(), 1};
  auto g1 = m.connect();
  auto end = m.disconnect("connect_failed", "refused");
  EXPECT_TRUE(end.info.will_reconnect);
  EXPECT_FALSE(m.reconnect_due(g1)) << "the reconnect timer carries the new generation";
  EXPECT_TRUE(m.reconnect_due(m.generation()));
  auto g2 = m.connect();
  EXPECT_NE(g1, g2);
  EXPECT_FALSE(m.attempt_failed(g1));
  EXPECT_FALSE(m.connected(g1, t0)) << "a late socket of attempt 1 is closed";
  EXPECT_TRUE(m.attempt_failed(g2));
  ASSERT_TRUE(m.connected(g2, t0));
  EXPECT_FALSE(m.handshake_expired(g1));
  EXPECT_FALSE(m.reconnect_due(g2)) << "only while idle";
}

TEST(LinkMachine, TheWatchdogFindsASilentServerRightAfterTheIdleTimeout) {
  auto m = established();
  auto g = m.generation();
  auto r = m.watchdog(g, t0 + 100ms);
  EXPECT_FALSE(r.silent);
  ASSERT_TRUE(r.next);
  EXPECT_EQ(*r.next, t0 + 200ms);
  m.received(t0 + 150ms);
  r = m.watchdog(g, t0 + 650ms); // silent exactly 500 ms: still allowed
  EXPECT_FALSE(r.silent);
  r = m.watchdog(g, t0 + 651ms);
  EXPECT_TRUE(r.silent);
  EXPECT_EQ(r.silence, 501ms);
  EXPECT_FALSE(m.watchdog(g + 1, t0 + 10s).silent) << "a stale timer decides nothing";
  EXPECT_FALSE(m.watchdog(g + 1, t0 + 10s).next);
}

TEST(LinkMachine, ReconnectDelaysGrowAndTheAttemptLimitEndsTheRun) {
  auto o = options();
  o.reconnect.max_attempts = 3;
  link_machine m{o, 7};
  std::vector<std::chrono::milliseconds> delays;
  for (int i = 1; i <= 3; ++i) {
    m.connect();
    auto end = m.disconnect("connect_failed", "refused");
    EXPECT_EQ(end.info.attempt, i);
    ASSERT_TRUE(end.info.will_reconnect) << "attempt " << i;
    EXPECT_FALSE(end.give_up);
    delays.push_back(end.info.retry_in);
  }
  m.connect();
  auto end = m.disconnect("connect_failed", "refused");
  EXPECT_FALSE(end.info.will_reconnect);
  EXPECT_TRUE(end.give_up);
  EXPECT_EQ(end.exit_code, 1);
  // Jittered exponential backoff from 100 ms, capped at 1 s.
  for (auto d : delays) {
    EXPECT_GE(d, 50ms);
    EXPECT_LE(d, 1500ms);
  }
  EXPECT_LT(delays[0], delays[2]);
}

TEST(LinkMachine, AServersRetryAfterDelaysTheReconnect) {
  // A quarantine (or rate limit) says how long: reconnecting sooner would
  // only be refused again.
  link_machine m{options(), 7};
  m.connect();
  auto end = m.disconnect("quarantined", "quarantined for another 42s", 42s);
  ASSERT_TRUE(end.info.will_reconnect) << "not fatal: it ends";
  EXPECT_EQ(end.info.retry_in, 42s);
  m.connect();
  end = m.disconnect("too_many_connections", "50 open", 1ms);
  EXPECT_GE(end.info.retry_in, 50ms) << "never sooner than the backoff";
}

TEST(LinkMachine, AWelcomeResetsTheAttemptCount) {
  link_machine m{options(), 1};
  m.connect();
  m.disconnect("connect_failed", "refused");
  m.connect();
  m.disconnect("connect_failed", "refused");
  EXPECT_EQ(m.attempt(), 2);
  auto g = m.connect();
  ASSERT_TRUE(m.connected(g, t0));
  m.welcome(session(100ms, 500ms), t0);
  EXPECT_EQ(m.attempt(), 0);
  auto end = m.disconnect("connection_lost", "reset");
  EXPECT_TRUE(end.was_connected);
  EXPECT_EQ(end.info.attempt, 1);
}

TEST(LinkMachine, RefusalsThatRetryingCannotFixEndTheRun) {
  namespace codes = proto::codes;
  for (auto code :
       {codes::auth_failed, codes::invalid_name, codes::unsupported_version, codes::name_taken,
        codes::too_many_routes, codes::invalid_route, codes::replaced}) {
    link_machine m{options(), 1};
    auto g = m.connect();
    ASSERT_TRUE(m.connected(g, t0));
    auto end = m.disconnect(std::string{code}, "refused");
    EXPECT_FALSE(end.info.will_reconnect) << code;
    EXPECT_TRUE(end.give_up) << code;
    EXPECT_EQ(end.exit_code, 1) << code;
  }
}

TEST(LinkMachine, AnOrderlyServerShutdownWithoutReconnectExitsZero) {
  auto o = options();
  o.reconnect.enabled = false;
  auto m = established(o);
  auto end = m.disconnect(std::string{proto::codes::shutdown}, "server stopping");
  EXPECT_TRUE(end.was_connected);
  EXPECT_FALSE(end.info.will_reconnect);
  EXPECT_TRUE(end.give_up);
  EXPECT_EQ(end.exit_code, 0);
}

TEST(LinkMachine, StoppingWithASessionSaysGoodbyeFirst) {
  auto m = established();
  m.begin_stop();
  EXPECT_TRUE(m.connected()) << "teardown() may still send";
  EXPECT_TRUE(m.stopping());
  EXPECT_TRUE(m.close_for_stop());
  EXPECT_TRUE(m.closing());
  EXPECT_FALSE(m.reconnect_due(m.generation()));
  m.finished();
  EXPECT_EQ(m.current(), state::stopped);
}

TEST(LinkMachine, StoppingWhileConnectingEndsAtOnceAndRefusesALateSocket) {
  link_machine m{options(), 1};
  auto g = m.connect();
  m.begin_stop();
  EXPECT_FALSE(m.close_for_stop());
  EXPECT_FALSE(m.connected(g, t0)) << "the connector's socket arrives after the stop";
  auto end = m.disconnect("connect_failed", "refused");
  EXPECT_FALSE(end.info.will_reconnect);
  EXPECT_FALSE(end.give_up) << "already stopping: no second stop";
}

TEST(LinkMachine, ALameDuckHintReplacesTheBackoff) {
  // The backoff alone would wait 100 ms (+/- jitter) after a session: the
  // server's hint is taken exactly, even when it is longer than max_delay.
  for (auto hint : {30ms, 1700ms, 4000ms}) {
    auto m = established();
    auto end = m.disconnect(std::string{proto::codes::lame_duck}, "going away", 0ms, hint);
    EXPECT_TRUE(end.was_connected);
    EXPECT_TRUE(end.info.will_reconnect);
    EXPECT_EQ(end.info.retry_in, hint);
    EXPECT_EQ(end.info.reconnect_hint, hint) << "on_disconnect sees the hint";
    EXPECT_EQ(end.info.attempt, 1);
    EXPECT_TRUE(m.reconnect_due(m.generation()));
  }
}

TEST(LinkMachine, WithoutAHintTheBackoffApplies) {
  auto m = established();
  auto end = m.disconnect(std::string{proto::codes::shutdown}, "server stopping");
  EXPECT_EQ(end.info.reconnect_hint, 0ms);
  EXPECT_GE(end.info.retry_in, 50ms);
  EXPECT_LE(end.info.retry_in, 150ms) << "initial_delay 100 ms with jitter";
}

TEST(LinkMachine, AHintIsCappedAndNeverShortensARetryAfter) {
  auto m = established();
  auto end = m.disconnect(std::string{proto::codes::lame_duck}, "going away", 0ms,
                          std::chrono::hours{24 * 365});
  EXPECT_EQ(end.info.retry_in, link_machine::max_hint) << "a hostile hint is capped at a day";
  auto m2 = established();
  auto end2 = m2.disconnect(std::string{proto::codes::lame_duck}, "going away", 2s, 500ms);
  EXPECT_EQ(end2.info.retry_in, 2s);
}

TEST(LinkMachine, ALameDuckGoodbyeWithoutReconnectIsAnOrderlyExit) {
  auto o = options();
  o.reconnect.enabled = false;
  auto m = established(o);
  auto end = m.disconnect(std::string{proto::codes::lame_duck}, "going away", 0ms, 700ms);
  EXPECT_FALSE(end.info.will_reconnect) << "the hint does not turn reconnecting on";
  EXPECT_EQ(end.info.reconnect_hint, 700ms);
  EXPECT_TRUE(end.give_up);
  EXPECT_EQ(end.exit_code, 0);
}

TEST(LinkMachine, AHintDoesNotOverrideAStop) {
  auto m = established();
  m.begin_stop();
  auto end = m.disconnect(std::string{proto::codes::lame_duck}, "going away", 0ms, 300ms);
  EXPECT_FALSE(end.info.will_reconnect);
  EXPECT_FALSE(m.reconnect_due(m.generation()));
}
