// Registry and fan-out decisions of the router (CAF-free).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

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

TEST(Routing, RandomSubscriptionsAgreeWithPatternMatches) {
  // Random patterns and routes over a small alphabet (so that they collide),
  // subscribed, unsubscribed and removed at random; every broadcast is
  // compared with pattern_matches over the live subscriptions.
  std::mt19937 rng{20261130};
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const char* tokens[] = {"a", "b", "c"};
  auto make = [&](bool pattern) {
    std::string s;
    int n = 1 + pick(4);
    for (int i = 0; i < n; ++i) {
      if (i > 0)
        s += '.';
      int t = pick(pattern ? 5 : 3);
      s += t < 3 ? tokens[t] : t == 3 || i + 1 < n ? "*" : ">";
    }
    return s;
  };
  table t;
  std::map<uint64_t, std::set<std::string>> subs; // the reference
  for (int step = 0; step < 3000; ++step) {
    auto sid = static_cast<uint64_t>(1 + pick(20));
    auto e = t.find(sid);
    switch (pick(6)) {
    case 0:
      if (e == nullptr) {
        t.add(sid, "agent-" + std::to_string(sid), "", 0, {});
        subs[sid];
      } else {
        t.remove(sid);
        subs.erase(sid);
      }
      break;
    case 1:
    case 2:
      if (e != nullptr) {
        auto p = make(true);
        EXPECT_EQ(t.subscribe(*e, p), subs[sid].insert(p).second);
      }
      break;
    case 3:
      if (e != nullptr && !subs[sid].empty()) {
        auto i = subs[sid].begin();
        std::advance(i, pick(static_cast<int>(subs[sid].size())));
        EXPECT_TRUE(t.unsubscribe(*e, *i));
        subs[sid].erase(i);
      }
      break;
    default: {
      auto route = make(false);
      auto sender = static_cast<uint64_t>(1 + pick(20));
      std::vector<std::string> want;
      for (auto& [id, ps] : subs)
        if (id != sender
            && (ps.empty() || std::any_of(ps.begin(), ps.end(), [&](const std::string& p) {
                  return convoke::proto::pattern_matches(p, route);
                })))
          want.push_back("agent-" + std::to_string(id));
      std::sort(want.begin(), want.end());
      ASSERT_EQ(targets(t, sender, route), want) << "step " << step << " route " << route;
    }
    }
  }
  for (auto& [id, ps] : subs)
    t.remove(id);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.trie_nodes(), 0u);
  EXPECT_EQ(t.pattern_count(), 0u);
}

TEST(Routing, ListNamesPagesInOrderByPrefixAndVisibility) {
  table t;
  uint64_t sid = 0;
  for (auto n : {"carol", "team.b", "alice", "team.a", "bob", "team.c", "teamster"})
    t.add(++sid, n, "", 0, {});
  auto all = [](const table::entry&) { return true; };
  std::vector<std::string> out;
  EXPECT_FALSE(t.list_names("", "", 100, all, out));
  EXPECT_EQ(out, (std::vector<std::string>{"alice", "bob", "carol", "team.a", "team.b", "team.c",
                                           "teamster"}));
  // Pages of two under a prefix, each after the last name of the previous.
  out.clear();
  EXPECT_TRUE(t.list_names("team.", "", 2, all, out));
  EXPECT_EQ(out, (std::vector<std::string>{"team.a", "team.b"}));
  out.clear();
  EXPECT_FALSE(t.list_names("team.", "team.b", 2, all, out));
  EXPECT_EQ(out, (std::vector<std::string>{"team.c"}));
  // Exactly the limit left: not truncated.
  out.clear();
  EXPECT_FALSE(t.list_names("team.", "", 3, all, out));
  EXPECT_EQ(out.size(), 3u);
  // `after` before the prefix starts at the prefix; after all of them: none.
  out.clear();
  EXPECT_FALSE(t.list_names("team.", "a", 10, all, out));
  EXPECT_EQ(out.front(), "team.a");
  out.clear();
  EXPECT_FALSE(t.list_names("team.", "zzz", 10, all, out));
  EXPECT_TRUE(out.empty());
  // Invisible names are skipped and do not count toward the limit.
  out.clear();
  EXPECT_TRUE(t.list_names(
    "", "", 2, [](const table::entry& e) { return e.name.rfind("team", 0) != 0; }, out));
  EXPECT_EQ(out, (std::vector<std::string>{"alice", "bob"}));
  out.clear();
  EXPECT_TRUE(t.list_names(
    "", "", 1, [](const table::entry& e) { return e.name.size() == 6; }, out));
  EXPECT_EQ(out, (std::vector<std::string>{"team.a"}));
  // Removed agents leave the listing.
  t.remove(4); // team.a
  out.clear();
  t.list_names("team", "", 10, all, out);
  EXPECT_EQ(out, (std::vector<std::string>{"team.b", "team.c", "teamster"}));
}
