// Registry and fan-out decisions of the router (CAF-free).
#include <gtest/gtest.h>

#include <algorithm>

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
