// ListAgents (feature "list_agents"): who is connected, as an agent may ask
// it (agents are not operators and have no admin access). Sorted, paged by
// `after`, filtered by prefix and by the asker's `send` right, answered in
// order with the asker's other frames, rate-limited like messages.

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include <fmt/format.h>

#include "credentials.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

v1::Frame list_request(uint64_t id, const std::string& prefix = {}, uint32_t limit = 0,
                       const std::string& after = {}) {
  v1::Frame f;
  auto& l = *f.mutable_list_agents();
  l.set_request_id(id);
  l.set_prefix(prefix);
  l.set_limit(limit);
  l.set_after(after);
  return f;
}

/// Sends a ListAgents and returns its answer (other frames are skipped).
std::optional<v1::AgentList> ask(raw_client& c, uint64_t id, const std::string& prefix = {},
                                 uint32_t limit = 0, const std::string& after = {}) {
  if (!c.send(list_request(id, prefix, limit, after)))
    return std::nullopt;
  auto f = c.read_kind(v1::Frame::kAgentList, 5s);
  if (!f)
    return std::nullopt;
  return f->agent_list();
}

std::vector<std::string> names(const v1::AgentList& l) {
  return {l.agents().begin(), l.agents().end()};
}

} // namespace

TEST(ServerListAgents, NamesAreSortedPagedAndFilteredByPrefix) {
  test_server srv;
  std::vector<raw_client> agents;
  for (auto n : {"team.b", "carol", "team.a", "alice", "team.c"}) {
    agents.emplace_back(srv.port());
    ASSERT_TRUE(agents.back().hello(n).has_welcome()) << n;
  }
  raw_client asker{srv.port()};
  auto w = asker.hello("bob");
  ASSERT_TRUE(w.has_welcome());
  ASSERT_GE(w.welcome().features_size(), 1);
  EXPECT_EQ(w.welcome().features(0), "list_agents") << "the Welcome announces the feature";

  auto all = ask(asker, 7);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->request_id(), 7u);
  EXPECT_EQ(names(*all),
            (std::vector<std::string>{"alice", "bob", "carol", "team.a", "team.b", "team.c"}));
  EXPECT_FALSE(all->truncated());

  auto first = ask(asker, 8, "team.", 2);
  ASSERT_TRUE(first);
  EXPECT_EQ(names(*first), (std::vector<std::string>{"team.a", "team.b"}));
  EXPECT_TRUE(first->truncated());
  auto rest = ask(asker, 9, "team.", 2, "team.b");
  ASSERT_TRUE(rest);
  EXPECT_EQ(names(*rest), (std::vector<std::string>{"team.c"}));
  EXPECT_FALSE(rest->truncated());

  // A prefix longer than any name can be matches nothing (and is not kept).
  auto none = ask(asker, 10, std::string(5000, 'a'));
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->agents().empty());

  // An agent that left is no longer listed.
  agents[1].close(); // carol
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    auto l = ask(asker, 100 + static_cast<uint64_t>(i), "c");
    ASSERT_TRUE(l);
    gone = l->agents().empty();
  }
  EXPECT_TRUE(gone) << "carol is still listed after closing";
}

TEST(ServerListAgents, TheAnswerComesAfterNoticesAboutEarlierFrames) {
  test_server srv;
  raw_client c{srv.port()};
  ASSERT_TRUE(c.hello("asker").has_welcome());
  ASSERT_TRUE(c.send_envelope("nobody", "hi", "", 41));
  ASSERT_TRUE(c.send(list_request(42)));
  auto first = c.read(5s);
  ASSERT_TRUE(first);
  ASSERT_TRUE(first->has_notice()) << first->ShortDebugString();
  EXPECT_EQ(first->notice().code(), "unknown_recipient");
  auto second = c.read(5s);
  ASSERT_TRUE(second);
  ASSERT_TRUE(second->has_agent_list()) << second->ShortDebugString();
  EXPECT_EQ(second->agent_list().request_id(), 42u);
  EXPECT_EQ(names(second->agent_list()), (std::vector<std::string>{"asker"}));
}

TEST(ServerListAgents, ARestrictedSendRightSeesOnlyTheNamesItMaySendTo) {
  temp_dir dir;
  auto path = dir.file("credentials.toml");
  auto all_token = server::generate_token();
  auto team_token = server::generate_token();
  server::identity everyone;
  everyone.name = "ops";
  everyone.names = {"ops", "ops.*", "team.*", "other"};
  everyone.rights = server::rights::all();
  everyone.token_hash = server::hash_token(all_token).value();
  server::identity team;
  team.name = "member";
  team.names = {"member"};
  team.rights = server::rights::all();
  team.rights.send = {"team.*"};
  team.token_hash = server::hash_token(team_token).value();
  std::ofstream{path} << server::format_identity(everyone) << server::format_identity(team);
  test_server srv{[&](auto& cfg) {
    cfg.credentials = path;
    cfg.failed_login_delay = 0ms;
  }};
  std::vector<raw_client> others;
  for (auto n : {"team.x", "team.y", "other", "ops"}) {
    others.emplace_back(srv.port());
    ASSERT_TRUE(others.back().login(n, "ops", all_token).has_welcome()) << n;
  }
  raw_client member{srv.port()};
  ASSERT_TRUE(member.login("member", {}, team_token).has_welcome());
  auto seen = ask(member, 1);
  ASSERT_TRUE(seen);
  EXPECT_EQ(names(*seen), (std::vector<std::string>{"team.x", "team.y"}));
  // Paging counts only visible names.
  auto page = ask(member, 2, "", 1);
  ASSERT_TRUE(page);
  EXPECT_EQ(names(*page), (std::vector<std::string>{"team.x"}));
  EXPECT_TRUE(page->truncated());
  // The unrestricted identity sees everyone.
  auto full = ask(others.back(), 3);
  ASSERT_TRUE(full);
  EXPECT_EQ(names(*full), (std::vector<std::string>{"member", "ops", "other", "team.x", "team.y"}));
}

TEST(ServerListAgents, ListingsCountAgainstTheMessageRate) {
  test_server srv{[](auto& cfg) {
    cfg.messages_per_second = 2;
    cfg.quarantine_after = 0;
  }};
  raw_client c{srv.port()};
  ASSERT_TRUE(c.hello("hasty").has_welcome());
  for (uint64_t id = 1; id <= 4; ++id)
    ASSERT_TRUE(c.send(list_request(id)));
  int answered = 0;
  std::optional<v1::Notice> limited;
  while (auto f = c.read(1s)) {
    if (f->has_agent_list())
      ++answered;
    if (f->has_notice() && !limited)
      limited = f->notice();
  }
  EXPECT_GE(answered, 2);
  EXPECT_LE(answered, 3); // a slow run may refill a token
  ASSERT_TRUE(limited) << "no rate_limited Notice";
  EXPECT_EQ(limited->code(), "rate_limited");
  EXPECT_GE(limited->request_id(), 3u) << "the Notice names the ListAgents it is about";
  EXPECT_GT(limited->retry_after_ms(), 0u);
  EXPECT_NE(limited->text().find("ListAgents"), std::string::npos) << limited->text();
}

TEST(ServerListAgents, AnAnswerNeverExceedsTheFrameLimit) {
  test_server srv{[](auto& cfg) { cfg.max_frame_bytes = 1024; }};
  std::vector<raw_client> agents;
  for (int i = 0; i < 30; ++i) {
    agents.emplace_back(srv.port());
    auto n = fmt::format("agent-with-a-rather-long-name-{:02}", i); // 32 bytes
    ASSERT_TRUE(agents.back().hello(n).has_welcome()) << n;
  }
  auto& asker = agents.front();
  std::vector<std::string> all;
  std::string after;
  for (uint64_t id = 1; id < 10; ++id) {
    auto raw_before = all.size();
    auto l = ask(asker, id, "", 0, after);
    ASSERT_TRUE(l);
    EXPECT_LE(l->ByteSizeLong(), 1024u);
    for (auto& n : l->agents())
      all.push_back(n);
    EXPECT_GT(all.size(), raw_before);
    if (!l->truncated())
      break;
    after = all.back();
  }
  EXPECT_EQ(all.size(), 30u) << "paging reached every name";
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
}
