// Registry and fan-out decisions of the router (CAF-free).
#include <gtest/gtest.h>

#include <algorithm>

#include "convoke/proto/subject.hpp"
#include "routing_table.hpp"

using namespace convoke::server;

namespace {

using table = routing_table<int>;

std::vector<std::string> targets(table& t, uint64_t sender, std::string_view route) {
  std::vector<table::entry*> out;
  t.broadcast_targets(sender, route, out);
  std::vector<std::string> names;
  for (auto e : out)
    names.push_back(e->name);
  std::sort(names.begin(), names.end());
  return names;
}

} // namespace

TEST(Routing, BroadcastGoesToEveryoneButTheSender) {
  table t;
  t.add(1, "a", "tok", 10, {});
  t.add(2, "b", "tok", 20, {});
  t.add(3, "c", "tok", 30, {});
  EXPECT_EQ(targets(t, 1, ""), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(targets(t, 2, "any"), (std::vector<std::string>{"a", "c"}));
}

TEST(Routing, SubscribersGetOnlyTheirRoutes) {
  table t;
  t.add(1, "pub", "", 1, {});
  t.add(2, "news", "", 2, {"news"});
  t.add(3, "both", "", 3, {"news", "sports"});
  t.add(4, "all", "", 4, {});
  EXPECT_EQ(targets(t, 1, "news"), (std::vector<std::string>{"all", "both", "news"}));
  EXPECT_EQ(targets(t, 1, "sports"), (std::vector<std::string>{"all", "both"}));
  EXPECT_EQ(targets(t, 1, ""), (std::vector<std::string>{"all"}));
  EXPECT_EQ(targets(t, 2, "news"), (std::vector<std::string>{"all", "both", "pub"}));
}

TEST(Routing, UnsubscribingTheLastRouteMeansEverythingAgain) {
  table t;
  t.add(1, "pub", "", 1, {});
  auto& sub = t.add(2, "sub", "", 2, {"x"});
  EXPECT_TRUE(t.unsubscribe(sub, "x"));
  EXPECT_FALSE(t.unsubscribe(sub, "x"));
  EXPECT_EQ(targets(t, 1, ""), (std::vector<std::string>{"sub"}));
  EXPECT_TRUE(t.subscribe(sub, "y"));
  EXPECT_FALSE(t.subscribe(sub, "y"));
  EXPECT_TRUE(targets(t, 1, "").empty());
  EXPECT_EQ(targets(t, 1, "y"), (std::vector<std::string>{"sub"}));
}

TEST(Routing, RemoveForgetsNameAndSubscriptions) {
  table t;
  t.add(1, "a", "", 1, {"r"});
  t.add(2, "b", "", 2, {});
  t.remove(1);
  EXPECT_EQ(t.find_name("a"), nullptr);
  EXPECT_EQ(t.find(1), nullptr);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(targets(t, 2, "r").empty());
  t.add(3, "a", "", 3, {}); // name reusable
  EXPECT_EQ(t.find_name("a")->session_id, 3u);
  t.remove(99); // unknown: no effect
  EXPECT_EQ(t.size(), 2u);
}

TEST(Routing, ManyAgentsStayConsistent) {
  table t;
  for (int i = 0; i < 1000; ++i)
    t.add(static_cast<uint64_t>(i), "agent-" + std::to_string(i), "", i,
          i % 2 == 0 ? std::vector<std::string>{"even"} : std::vector<std::string>{});
  for (int i = 0; i < 1000; i += 3)
    t.remove(static_cast<uint64_t>(i));
  std::vector<table::entry*> out;
  t.broadcast_targets(1, "even", out);
  // remaining = 1000 - 334 removed; minus the sender.
  EXPECT_EQ(out.size(), 1000u - 334u - 1u);
}

TEST(Routing, PatternSubscriptionsMatchByTokens) {
  table t;
  t.add(1, "pub", "", 1, {"unrelated"});
  t.add(2, "all-weather", "", 2, {"weather.>"});
  t.add(3, "any-paris", "", 3, {"weather.*.paris"});
  t.add(4, "news", "", 4, {"news.>"});
  t.add(5, "one-token", "", 5, {"*"});
  t.add(6, "everything", "", 6, {">"});
  t.add(7, "exact", "", 7, {"weather.eu.paris"});
  EXPECT_EQ(targets(t, 1, "weather.eu.paris"),
            (std::vector<std::string>{"all-weather", "any-paris", "everything", "exact"}));
  EXPECT_EQ(targets(t, 1, "weather.eu"), (std::vector<std::string>{"all-weather", "everything"}));
  EXPECT_EQ(targets(t, 1, "weather"), (std::vector<std::string>{"everything", "one-token"}));
  EXPECT_EQ(targets(t, 1, "weather.eu.paris.15e"),
            (std::vector<std::string>{"all-weather", "everything"}));
  EXPECT_EQ(targets(t, 1, "news.sport"), (std::vector<std::string>{"everything", "news"}));
  EXPECT_EQ(targets(t, 1, "weather/report"), (std::vector<std::string>{"everything", "one-token"}));
  // Never the sender, even when its own pattern matches.
  EXPECT_EQ(targets(t, 6, "news.sport"), (std::vector<std::string>{"news"}));
  EXPECT_EQ(t.pattern_count(), 5u);
}

TEST(Routing, AgreesWithPatternMatchesOnEveryPair) {
  // The trie against the reference matcher, over all pairs of a small set.
  const std::vector<std::string> patterns = {"a", "a.b",   "a.*",   "a.>",   "*.b", "*.*", "*.>",
                                             ">", "a.b.c", "a.*.c", "*.b.>", "b.>", "*",   "a.b.>"};
  const std::vector<std::string> routes
    = {"a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "a.b.c.d", "x.b.y", "b"};
  table t;
  t.add(1000, "pub", "", 0, {"none"});
  for (size_t i = 0; i < patterns.size(); ++i)
    t.add(i, patterns[i], "", static_cast<int>(i), {patterns[i]});
  for (auto& r : routes) {
    std::vector<std::string> want;
    for (auto& p : patterns)
      if (convoke::proto::pattern_matches(p, r))
        want.push_back(p);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(targets(t, 1000, r), want) << r;
  }
}

TEST(Routing, SeveralMatchingSubscriptionsDeliverOnce) {
  table t;
  t.add(1, "pub", "", 1, {"x"});
  t.add(2, "greedy", "", 2, {"a.b", "a.*", "a.>", "*.b", ">"});
  t.add(3, "other", "", 3, {"a.*"});
  EXPECT_EQ(targets(t, 1, "a.b"), (std::vector<std::string>{"greedy", "other"}));
  EXPECT_EQ(targets(t, 1, "a.b"), (std::vector<std::string>{"greedy", "other"})); // next epoch
  EXPECT_EQ(targets(t, 1, "z"), (std::vector<std::string>{"greedy"}));
}

TEST(Routing, UnsubscribingAPatternRemovesExactlyThatPattern) {
  table t;
  t.add(1, "pub", "", 1, {"x"});
  auto& sub = t.add(2, "sub", "", 2, {"a.*", "a.>", "a.b"});
  EXPECT_FALSE(t.unsubscribe(sub, "a.x")); // not a subscription, though "a.*" matches it
  EXPECT_TRUE(t.unsubscribe(sub, "a.*"));
  EXPECT_FALSE(t.unsubscribe(sub, "a.*"));
  EXPECT_EQ(targets(t, 1, "a.x"), (std::vector<std::string>{"sub"})); // by "a.>"
  EXPECT_TRUE(t.unsubscribe(sub, "a.>"));
  EXPECT_TRUE(targets(t, 1, "a.x").empty());
  EXPECT_EQ(targets(t, 1, "a.b"), (std::vector<std::string>{"sub"})); // exact stays
  EXPECT_EQ(t.pattern_count(), 0u);
  EXPECT_EQ(t.trie_nodes(), 0u);
  EXPECT_TRUE(t.unsubscribe(sub, "a.b"));
  EXPECT_EQ(targets(t, 1, "a.x"), (std::vector<std::string>{"sub"})); // no subscription: all
}

TEST(Routing, RemoveLeavesNoTrieNodesBehind) {
  table t;
  t.add(1, "a", "", 1, {"w.*.paris", "w.>", "n.x.y.z.>"});
  EXPECT_EQ(t.trie_nodes(), 7u); // w, w.*, w.*.paris, n, n.x, n.x.y, n.x.y.z
  t.add(2, "b", "", 2, {"w.*.paris", "w.*.rome"});
  EXPECT_EQ(t.trie_nodes(), 8u); // + w.*.rome
  t.remove(1);
  EXPECT_EQ(t.trie_nodes(), 4u); // w, w.*, w.*.paris, w.*.rome
  EXPECT_EQ(targets(t, 9, "w.eu.paris"), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(targets(t, 9, "w.eu").empty());
  t.remove(2);
  EXPECT_EQ(t.trie_nodes(), 0u);
  EXPECT_EQ(t.pattern_count(), 0u);
}

TEST(Routing, ManyPatternSubscriptionsStayConsistent) {
  table t;
  t.add(0, "pub", "", 0, {"none"});
  // 200 agents x 50 subscriptions: a mix of exact routes and patterns.
  for (int a = 1; a <= 200; ++a) {
    std::vector<std::string> routes;
    for (int k = 0; k < 50; ++k) {
      auto n = std::to_string(a * 50 + k);
      switch (k % 3) {
      case 0:
        routes.push_back("s." + n + ".x");
        break;
      case 1:
        routes.push_back("s." + n + ".*");
        break;
      default:
        routes.push_back("s." + n + ".>");
        break;
      }
    }
    if (a % 10 == 0)
      routes.push_back("s.*.hit");
    t.add(static_cast<uint64_t>(a), "agent-" + std::to_string(a), "", a, routes);
  }
  EXPECT_EQ(t.pattern_count(), 200u * 33u + 20u);
  EXPECT_EQ(targets(t, 0, "s.51.x"), (std::vector<std::string>{"agent-1"}));
  EXPECT_EQ(targets(t, 0, "s.52.anything.more"), (std::vector<std::string>{"agent-1"}));
  // The 20 "s.*.hit" subscribers and agent-2 by "s.101.*", each once.
  auto hit = targets(t, 0, "s.101.hit");
  EXPECT_EQ(hit.size(), 21u);
  EXPECT_EQ(std::count(hit.begin(), hit.end(), "agent-2"), 1);
  EXPECT_EQ(std::count(hit.begin(), hit.end(), "agent-10"), 1);
  for (int a = 1; a <= 200; ++a)
    t.remove(static_cast<uint64_t>(a));
  EXPECT_EQ(t.trie_nodes(), 0u);
  EXPECT_EQ(t.pattern_count(), 0u);
}
