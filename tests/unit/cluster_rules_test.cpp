// The cluster's decisions that need no actor (server/src/cluster_rules.hpp):
// which claim on an agent name wins, node names, message id prefixes and
// the cluster-wide agent list; and a node's interest in a route
// (routing_table::wants).

#include <gtest/gtest.h>

#include "cluster_rules.hpp"
#include "convoke/proto/rules.hpp"
#include "routing_table.hpp"

using namespace convoke::server;

TEST(ClaimBeats, TakeOverWinsOverAnOlderClaim) {
  claim_key old{0, 100, "a"};
  claim_key taken_over{1, 500, "b"};
  EXPECT_TRUE(claim_beats(taken_over, old));
  EXPECT_FALSE(claim_beats(old, taken_over));
}

TEST(ClaimBeats, OlderClaimWinsAtTheSameGeneration) {
  claim_key first{0, 100, "z"};
  claim_key second{0, 101, "a"};
  EXPECT_TRUE(claim_beats(first, second));
  EXPECT_FALSE(claim_beats(second, first));
}

TEST(ClaimBeats, NodeNameBreaksATieAndBothNodesAgree) {
  claim_key on_a{0, 100, "node-a"};
  claim_key on_b{0, 100, "node-b"};
  // Each node evaluates "theirs beats mine" with the roles swapped: exactly
  // one of them gives way.
  EXPECT_NE(claim_beats(on_a, on_b), claim_beats(on_b, on_a));
  EXPECT_TRUE(claim_beats(on_a, on_b));
}

TEST(ClaimBeats, AClaimDoesNotBeatItself) {
  claim_key c{3, 7, "n"};
  EXPECT_FALSE(claim_beats(c, c));
}

TEST(DefaultNodeName, IsAValidAgentNameFromTheShortHostName) {
  auto n = default_node_name("web-1.example.org", 0xabcd);
  EXPECT_EQ(n, "web-1-abcd");
  EXPECT_TRUE(convoke::proto::check_agent_name(n));
}

TEST(DefaultNodeName, HostileOrEmptyHostNamesStillGiveAValidName) {
  for (std::string h : std::initializer_list<std::string>{"", ".", "-x", "a b\tc",
                                                          std::string(300, 'h'), "\xff\xfe", "_"}) {
    auto n = default_node_name(h, 0x1234);
    EXPECT_TRUE(convoke::proto::check_agent_name(n)) << n;
    EXPECT_NE(n.find("1234"), std::string::npos) << n;
  }
}

TEST(MessageIdPrefix, IdsCarryThePrefixAndStayExactInJavaScript) {
  for (uint64_t p : {1u, 17u, 255u}) {
    auto first = first_message_id(p);
    EXPECT_EQ(id_prefix_of(first), p);
    EXPECT_LT(first + 1'000'000'000ull, 1ull << 53);
  }
  EXPECT_EQ(id_prefix_of(42), 0u); // a server without a cluster
}

TEST(MessageIdPrefix, PicksOneThatIsNotTaken) {
  std::vector<uint64_t> taken;
  for (uint64_t i = 1; i <= 254; ++i)
    taken.push_back(i);
  EXPECT_EQ(pick_id_prefix(12345, taken), 255u);
  for (uint64_t r = 0; r < 1000; ++r) {
    auto p = pick_id_prefix(r * 7919, {1, 2, 3});
    EXPECT_GE(p, 4u);
    EXPECT_LE(p, 255u);
  }
}

TEST(MergeNames, FirstNamesOfAllNodesInOrderWithoutDuplicates) {
  bool truncated = false;
  auto names = merge_names({{"a", "d"}, {"b", "c", "d"}, {}}, 3, truncated);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(truncated);
  truncated = false;
  names = merge_names({{"a"}, {"b"}}, 10, truncated);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(truncated);
}

TEST(RoutingWants, ANodeWantsWhatSomeAgentOfItWouldReceive) {
  routing_table<int> t;
  EXPECT_FALSE(t.wants("x"));
  EXPECT_FALSE(t.wants(""));
  auto& e = t.add(1, "sub", "", 0, {"x.y"});
  EXPECT_TRUE(t.wants("x.y"));
  EXPECT_FALSE(t.wants("x.z"));
  EXPECT_FALSE(t.wants("")); // a broadcast without a route reaches only the unsubscribed
  t.subscribe(e, "a.*");
  EXPECT_TRUE(t.wants("a.b"));
  EXPECT_FALSE(t.wants("a.b.c"));
  t.unsubscribe(e, "x.y");
  EXPECT_FALSE(t.wants("x.y"));
  t.add(2, "all", "", 0, {});
  EXPECT_TRUE(t.wants("anything"));
  EXPECT_TRUE(t.wants(""));
  t.remove(2);
  EXPECT_FALSE(t.wants("anything"));
}

TEST(RoutingWants, ARestrictedAgentWithoutSubscriptionsWantsNothing) {
  routing_table<int> t;
  t.add(1, "r", "", 0, {}, /*restricted=*/true);
  EXPECT_FALSE(t.wants("x"));
}
