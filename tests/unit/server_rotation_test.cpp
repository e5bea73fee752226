// Several servers (a cluster's nodes) and the server's reconnect_to hint:
// address parsing, the order of attempts, delays per round, the attempt
// limit, and which hinted addresses an agent accepts. The link machine runs
// with a fake clock; no actor, no socket.

#include <gtest/gtest.h>

#include "convoke/proto/rules.hpp"
#include "link_machine.hpp"

using namespace convoke;
using namespace std::chrono_literals;
using convoke::detail::link_machine;

namespace {

namespace codes = proto::codes;

const link_machine::time_point t0{std::chrono::seconds{1000}};

server_address addr(std::string host, uint16_t port, bool tls = false) {
  return server_address{std::move(host), port, tls};
}

client_options two_servers(bool tls = false) {
  client_options o;
  o.connect_timeout = 5s;
  o.reconnect.initial_delay = 100ms;
  o.reconnect.max_delay = 1s;
  o.servers = {addr("a", 1, tls), addr("b", 2, tls)};
  return o;
}

session_info session() {
  session_info s;
  s.heartbeat_interval = 100ms;
  s.idle_timeout = 500ms;
  return s;
}

/// Connects (to whatever the machine picks) and gets a Welcome.
void establish(link_machine& m) {
  auto g = m.connect();
  ASSERT_TRUE(m.connected(g, t0));
  ASSERT_TRUE(m.welcome(session(), t0));
}

/// A failed connection attempt to the machine's next server.
link_machine::ended fail_attempt(link_machine& m) {
  m.connect();
  return m.disconnect("connect_failed", "refused");
}

} // namespace

// -- addresses ------------------------------------------------------------------

TEST(ServerAddress, ParsesAndPrintsTheForms) {
  auto a = parse_server_address("tls://example.org:7421");
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, addr("example.org", 7421, true));
  EXPECT_EQ(to_string(*a), "tls://example.org:7421");
  auto v6 = parse_server_address("tcp://[::1]:7000");
  ASSERT_TRUE(v6);
  EXPECT_EQ(*v6, addr("::1", 7000));
  EXPECT_EQ(to_string(*v6), "[::1]:7000");
  auto defaults = addr("h", 9);
  EXPECT_EQ(*parse_server_address(":80", defaults), addr("h", 80));
  EXPECT_EQ(*parse_server_address("x", defaults), addr("x", 9));
  for (auto bad :
       {"udp://h:1", "tls://", "h:0", "h:65536", "h:x", "[::1", "a b:1", "a,b:1", "h\n:1"})
    EXPECT_FALSE(parse_server_address(bad)) << bad;
  EXPECT_FALSE(parse_server_address(std::string(max_server_address_length, 'h') + ":1"))
    << "too long";
  EXPECT_FALSE(parse_server_address(":1", addr("", 0))) << "no host at all";
}

TEST(ServerAddress, ACommaSeparatedListSetsTheServers) {
  client_options o;
  ASSERT_TRUE(set_server_address(o, "tls://a:1, tls://b:2,tls://c:3"));
  EXPECT_EQ(o.servers, (std::vector<server_address>{addr("a", 1, true), addr("b", 2, true),
                                                    addr("c", 3, true)}));
  EXPECT_EQ(o.host, "a") << "host, port and tls are the first";
  EXPECT_EQ(o.port, 1);
  EXPECT_TRUE(o.tls);
  EXPECT_EQ(server_list(o), o.servers);
  ASSERT_TRUE(set_server_address(o, "d:4")) << "one address again";
  EXPECT_TRUE(o.servers.empty());
  EXPECT_EQ(server_list(o), (std::vector<server_address>{addr("d", 4)}));
}

TEST(ServerAddress, ABadListChangesNothingAndSaysWhy) {
  client_options o;
  ASSERT_TRUE(set_server_address(o, "a:1,b:2"));
  auto before = o.servers;
  std::string why;
  EXPECT_FALSE(set_server_address(o, "tls://x:1,y:2", &why));
  EXPECT_NE(why.find("mixes"), std::string::npos) << why;
  EXPECT_FALSE(set_server_address(o, "x:1,,y:2", &why));
  EXPECT_NE(why.find("empty"), std::string::npos) << why;
  EXPECT_FALSE(set_server_address(o, "x:1,", &why));
  EXPECT_FALSE(set_server_address(o, "x:1,udp://y:2", &why));
  EXPECT_NE(why.find("udp://y:2"), std::string::npos) << why;
  EXPECT_EQ(o.servers, before);
  EXPECT_EQ(o.host, "a");
}

// -- rotation -------------------------------------------------------------------

TEST(ServerRotation, AFailedAttemptGoesToTheNextServerAtOnceAndAFailedRoundBacksOff) {
  link_machine m{two_servers(), 1};
  EXPECT_EQ(m.next_target(), addr("a", 1));
  m.connect();
  EXPECT_EQ(m.target(), addr("a", 1));
  auto e = m.disconnect("connect_failed", "refused");
  EXPECT_EQ(e.info.server, "a:1");
  ASSERT_TRUE(e.info.will_reconnect);
  EXPECT_FALSE(e.info.round_failed);
  EXPECT_EQ(e.info.retry_in, 0ms) << "a server not tried yet in this round: at once";
  EXPECT_EQ(e.info.next_server, "b:2");
  e = fail_attempt(m);
  EXPECT_EQ(e.info.server, "b:2");
  EXPECT_TRUE(e.info.round_failed) << "every server failed";
  EXPECT_GE(e.info.retry_in, 80ms) << "the first backoff delay (100 ms +/- 20%)";
  EXPECT_LE(e.info.retry_in, 120ms);
  EXPECT_EQ(e.info.next_server, "a:1");
  EXPECT_EQ(e.info.attempt, 2) << "attempts are still counted one by one";
  // The next rounds back off further; within a round, no delay.
  e = fail_attempt(m);
  EXPECT_EQ(e.info.retry_in, 0ms);
  e = fail_attempt(m);
  EXPECT_TRUE(e.info.round_failed);
  EXPECT_GE(e.info.retry_in, 160ms) << "the second backoff delay (200 ms +/- 20%)";
  EXPECT_LE(e.info.retry_in, 240ms);
}

TEST(ServerRotation, ALostSessionGoesToTheNextServerAfterTheFirstDelay) {
  link_machine m{two_servers(), 1};
  establish(m);
  EXPECT_EQ(m.target(), addr("a", 1));
  auto e = m.disconnect("connection_lost", "reset by peer");
  EXPECT_TRUE(e.was_connected);
  ASSERT_TRUE(e.info.will_reconnect);
  EXPECT_EQ(e.info.server, "a:1");
  EXPECT_EQ(e.info.next_server, "b:2") << "not the server that just went away";
  EXPECT_FALSE(e.info.round_failed);
  EXPECT_GE(e.info.retry_in, 80ms) << "jittered, so that a dead node's agents spread out";
  EXPECT_LE(e.info.retry_in, 120ms);
  // b fails too: the round (a lost, b failed) is over.
  e = fail_attempt(m);
  EXPECT_EQ(e.info.server, "b:2");
  EXPECT_TRUE(e.info.round_failed);
  EXPECT_EQ(e.info.next_server, "a:1");
  // a is back: a session there resets everything.
  establish(m);
  EXPECT_EQ(m.target(), addr("a", 1));
  EXPECT_EQ(m.attempt(), 0);
  e = m.disconnect("server_silent", "nothing for 600 ms");
  EXPECT_EQ(e.info.next_server, "b:2");
  EXPECT_LE(e.info.retry_in, 120ms) << "the backoff starts over after a session";
}

TEST(ServerRotation, WithOneServerTheDelaysAreTheSameAsEver) {
  client_options o = two_servers();
  o.servers.clear();
  o.host = "only";
  o.port = 7;
  link_machine m{o, 3};
  establish(m);
  EXPECT_EQ(m.target(), addr("only", 7));
  auto e = m.disconnect("connection_lost", "reset");
  EXPECT_TRUE(e.info.round_failed);
  EXPECT_EQ(e.info.next_server, "only:7");
  EXPECT_GE(e.info.retry_in, 80ms);
  EXPECT_LE(e.info.retry_in, 120ms);
  e = fail_attempt(m);
  EXPECT_GE(e.info.retry_in, 160ms) << "second failure, second delay";
  EXPECT_LE(e.info.retry_in, 240ms);
}

TEST(ServerRotation, TheAttemptLimitCountsRounds) {
  auto o = two_servers();
  o.reconnect.max_attempts = 2;
  link_machine m{o, 5};
  for (int round = 1; round <= 2; ++round) {
    EXPECT_TRUE(fail_attempt(m).info.will_reconnect);
    auto e = fail_attempt(m);
    EXPECT_TRUE(e.info.will_reconnect) << "round " << round;
    EXPECT_TRUE(e.info.round_failed);
  }
  EXPECT_TRUE(fail_attempt(m).info.will_reconnect) << "the third round still starts";
  auto e = fail_attempt(m);
  EXPECT_FALSE(e.info.will_reconnect);
  EXPECT_TRUE(e.give_up);
  EXPECT_EQ(e.exit_code, 1);
}

TEST(ServerRotation, WithoutReconnectingEachServerIsTriedOnceForTheFirstSession) {
  auto o = two_servers();
  o.reconnect.enabled = false;
  link_machine m{o, 1};
  auto e = fail_attempt(m);
  EXPECT_TRUE(e.info.will_reconnect) << "b has not been tried";
  EXPECT_EQ(e.info.retry_in, 0ms);
  e = fail_attempt(m);
  EXPECT_FALSE(e.info.will_reconnect);
  EXPECT_TRUE(e.give_up);
  // With a session, its end is the end.
  link_machine n{o, 1};
  establish(n);
  e = n.disconnect("connection_lost", "reset");
  EXPECT_FALSE(e.info.will_reconnect);
  EXPECT_TRUE(e.give_up);
}

TEST(ServerRotation, ARefusalThatRetryingCannotFixEndsTheRunEvenWithServersLeft) {
  for (auto code : {codes::name_taken, codes::name_conflict, codes::auth_failed}) {
    link_machine m{two_servers(), 1};
    m.connect();
    auto e = m.disconnect(std::string{code}, "refused");
    EXPECT_FALSE(e.info.will_reconnect) << code;
    EXPECT_TRUE(e.give_up) << code;
    EXPECT_EQ(e.exit_code, 1) << code;
  }
}

TEST(ServerRotation, ANameConflictEndsASessionForGood) {
  // Two nodes accepted the name and this session lost: like name_taken.
  link_machine m{two_servers(), 1};
  establish(m);
  auto e = m.disconnect(std::string{codes::name_conflict}, "the other claim is older", 0ms, 0ms,
                        {"c:3"});
  EXPECT_TRUE(e.was_connected);
  EXPECT_FALSE(e.info.will_reconnect);
  EXPECT_TRUE(e.info.reconnect_to.empty()) << "no hint is taken with it";
  EXPECT_TRUE(e.give_up);
  EXPECT_EQ(e.exit_code, 1);
}

// -- the server's hint ----------------------------------------------------------

TEST(ReconnectHint, ADrainingServerNamesWhereToGoFirstThenTheOwnListFollows) {
  link_machine m{two_servers(), 1};
  establish(m); // on a
  auto e = m.disconnect(std::string{codes::shutdown}, "draining", 0ms, 0ms, {"c:3", "d:4"});
  ASSERT_TRUE(e.info.will_reconnect);
  EXPECT_EQ(e.info.reconnect_to, (std::vector<std::string>{"c:3", "d:4"}));
  EXPECT_EQ(e.info.reconnect_to_ignored, 0);
  EXPECT_EQ(e.info.next_server, "c:3");
  EXPECT_LE(e.info.retry_in, 120ms) << "no reconnect_after_ms: the first delay";
  m.connect();
  EXPECT_EQ(m.target(), addr("c", 3));
  e = m.disconnect("connect_failed", "refused");
  EXPECT_EQ(e.info.next_server, "d:4");
  EXPECT_EQ(e.info.retry_in, 0ms);
  e = fail_attempt(m);
  EXPECT_EQ(e.info.server, "d:4");
  EXPECT_EQ(e.info.next_server, "b:2") << "then the own list, after the server that left";
  EXPECT_FALSE(e.info.round_failed);
  e = fail_attempt(m);
  EXPECT_EQ(e.info.server, "b:2");
  EXPECT_TRUE(e.info.round_failed) << "a (left), c, d, b: every server of the round";
  EXPECT_EQ(e.info.next_server, "a:1") << "the hint was for one round";
  EXPECT_GE(e.info.retry_in, 80ms);
  e = fail_attempt(m);
  EXPECT_EQ(e.info.next_server, "b:2") << "c and d are not in the list";
}

TEST(ReconnectHint, TheHintedServerGetsTheSessionAndTheDelayIsHonoured) {
  link_machine m{two_servers(), 1};
  establish(m);
  auto e = m.disconnect(std::string{codes::lame_duck}, "going away", 0ms, 1700ms, {"c:3"});
  ASSERT_TRUE(e.info.will_reconnect);
  EXPECT_EQ(e.info.retry_in, 1700ms) << "reconnect_after_ms, exactly";
  EXPECT_EQ(e.info.next_server, "c:3");
  establish(m);
  EXPECT_EQ(m.target(), addr("c", 3));
  // c goes away without a hint: the own list, from where it was.
  e = m.disconnect("connection_lost", "reset");
  EXPECT_EQ(e.info.next_server, "b:2");
}

TEST(ReconnectHint, OnlyAddressesOfTheConnectionsSchemeAreTaken) {
  // A TLS connection never sends the agent to plaintext (nor a plaintext
  // one to TLS): a hint with the other scheme is ignored, and counted.
  link_machine tls{two_servers(true), 1};
  establish(tls);
  auto e = tls.disconnect(std::string{codes::shutdown}, "draining", 0ms, 0ms,
                          {"c:3", "tcp://d:4", "tls://e:5"});
  EXPECT_EQ(e.info.reconnect_to, (std::vector<std::string>{"tls://e:5"}));
  EXPECT_EQ(e.info.reconnect_to_ignored, 2);
  EXPECT_EQ(e.info.next_server, "tls://e:5");
  tls.connect();
  EXPECT_TRUE(tls.target().tls);

  link_machine plain{two_servers(false), 1};
  establish(plain);
  e = plain.disconnect(std::string{codes::shutdown}, "draining", 0ms, 0ms, {"tls://c:3"});
  EXPECT_TRUE(e.info.reconnect_to.empty());
  EXPECT_EQ(e.info.reconnect_to_ignored, 1);
  EXPECT_EQ(e.info.next_server, "b:2") << "nothing usable: the own list";
}

TEST(ReconnectHint, HostileAddressesAreRefusedAndTheCountIsCapped) {
  std::vector<std::string> hostile{"",
                                   "c",                          // no port: nothing is filled in
                                   ":3",                         // no host
                                   "c:0",                        // no port either
                                   "c:99999",                    // not a port
                                   "udp://c:3",                  // no such scheme
                                   "c d:3",                      // a space in a host name
                                   "c\r\n:3",                    // a log line injection
                                   "[::1:3",                     // unclosed bracket
                                   std::string(600, 'x') + ":3", // too long
                                   "ok:1",
                                   "ok:1"}; // a duplicate
  int ignored = 0;
  auto taken = link_machine::accept_hints(hostile, false, ignored);
  EXPECT_EQ(taken, (std::vector<server_address>{addr("ok", 1)}));
  EXPECT_EQ(ignored, static_cast<int>(hostile.size()) - 1);

  std::vector<std::string> many;
  for (int i = 1; i <= 1000; ++i)
    many.push_back("n" + std::to_string(i) + ":7420");
  taken = link_machine::accept_hints(many, false, ignored);
  EXPECT_EQ(taken.size(), link_machine::max_hints);
  EXPECT_EQ(taken.back(), addr("n16", 7420));
  EXPECT_EQ(ignored, 1000 - static_cast<int>(link_machine::max_hints));
}

TEST(ReconnectHint, OnlyADrainOrLameDuckWithReconnectingOnIsFollowed) {
  for (auto code : {"connection_lost", "idle_timeout", "slow_consumer"}) {
    link_machine m{two_servers(), 1};
    establish(m);
    auto e = m.disconnect(code, "x", 0ms, 0ms, {"c:3"});
    EXPECT_TRUE(e.info.reconnect_to.empty()) << code;
    EXPECT_EQ(e.info.next_server, "b:2") << code;
  }
  auto o = two_servers();
  o.reconnect.enabled = false;
  link_machine m{o, 1};
  establish(m);
  auto e = m.disconnect(std::string{codes::shutdown}, "draining", 0ms, 0ms, {"c:3"});
  EXPECT_FALSE(e.info.will_reconnect) << "a hint does not turn reconnecting on";
  EXPECT_TRUE(e.give_up);
  EXPECT_EQ(e.exit_code, 0);
  link_machine s{two_servers(), 1};
  establish(s);
  s.begin_stop();
  e = s.disconnect(std::string{codes::shutdown}, "draining", 0ms, 0ms, {"c:3"});
  EXPECT_FALSE(e.info.will_reconnect) << "nor overrides a stop";
}

TEST(ReconnectHint, WithOneServerTheHintComesFirstAndTheServerAfter) {
  client_options o = two_servers();
  o.servers.clear();
  o.host = "only";
  o.port = 7;
  link_machine m{o, 1};
  establish(m);
  auto e = m.disconnect(std::string{codes::shutdown}, "draining", 0ms, 0ms, {"other:8"});
  EXPECT_EQ(e.info.next_server, "other:8");
  EXPECT_FALSE(e.info.round_failed);
  e = fail_attempt(m);
  EXPECT_TRUE(e.info.round_failed);
  EXPECT_EQ(e.info.next_server, "only:7");
}
