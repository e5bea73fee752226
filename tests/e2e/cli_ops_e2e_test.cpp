// End to end: the `convoke` CLI's additions for operators and chat users,
// with real convoke-server and convoke processes: --version, chat's /who,
// unknown commands and //text, direct messages in `listen`.

#include <gtest/gtest.h>

#include <csignal>
#include <sstream>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "server_process.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (!line.empty())
      out.push_back(json::parse(line));
  return out;
}

std::vector<std::string> payloads(const std::string& json_text) {
  std::vector<std::string> out;
  for (auto& j : json_lines(json_text))
    if (j["event"] == "message")
      out.push_back(j["payload"]);
  return out;
}

} // namespace

TEST(CliOps, VersionAndHelpNameTheOperatorCommands) {
  process version{{binary("convoke"), "--version"}};
  ASSERT_EQ(version.wait(5s), 0) << version.err();
  EXPECT_EQ(version.out().rfind(std::string{"convoke "} + CONVOKE_VERSION + " (protocol 2)", 0), 0u)
    << version.out();
  process help{{binary("convoke"), "--help"}};
  ASSERT_EQ(help.wait(5s), 0);
  for (auto cmd : {"server", "agents", "top", "--version"})
    EXPECT_NE(help.out().find(cmd), std::string::npos) << cmd;
  process check_help{{binary("convoke"), "server", "check", "--help"}};
  ASSERT_EQ(check_help.wait(5s), 0);
  for (auto opt : {"--admin", "--max-connections", "--min-agents", "--draining-critical",
                   "CONVOKE_ADMIN", "--timeout"})
    EXPECT_NE(check_help.out().find(opt), std::string::npos) << opt;
}

TEST(CliOps, ChatWhoListsAgentsAndUnknownCommandsAreNotSent) {
  server_process srv;
  process bob{{binary("convoke"), "listen", "-s", srv.address(), "-n", "bob", "--json"}};
  ASSERT_TRUE(bob.wait_output("\"event\":\"connected\"", 5s)) << bob.err();
  // End of input (not /quit) ends the chat once every /who is answered.
  process alice{{binary("convoke"), "chat", "-s", srv.address(), "-n", "alice"},
                "/who\n/bogus stuff\n//slash\n/who b\nplain\n"};
  ASSERT_EQ(alice.wait(10s), 0) << alice.err();
  auto err = alice.err();
  EXPECT_NE(err.find("who: 2 agents (alice, bob)"), std::string::npos) << err;
  EXPECT_NE(err.find("who: 1 agent named b* (bob)"), std::string::npos) << err;
  EXPECT_NE(err.find("error: unknown_command (/bogus is not a command"), std::string::npos) << err;
  ASSERT_TRUE(bob.wait_output("plain", 5s)) << bob.out();
  EXPECT_EQ(payloads(bob.out()), (std::vector<std::string>{"/slash", "plain"}))
    << "//slash is sent as /slash; /bogus is not sent";
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0);
}

TEST(CliOps, ListenShowsDirectMessagesMarkedAsDirect) {
  server_process srv;
  // Subscribed to a route: broadcasts elsewhere do not reach it, direct
  // messages do.
  process carol{{binary("convoke"), "listen", "-s", srv.address(), "-n", "carol", "-r", "news"}};
  process dave{
    {binary("convoke"), "listen", "-s", srv.address(), "-n", "dave", "-r", "news", "--json"}};
  ASSERT_TRUE(carol.wait_output("connected: carol", 5s)) << carol.err();
  ASSERT_TRUE(dave.wait_output("\"event\":\"connected\"", 5s)) << dave.err();
  process noise{
    {binary("convoke"), "send", "-s", srv.address(), "-n", "x", "-r", "sports", "goal"}};
  ASSERT_EQ(noise.wait(5s), 0) << noise.err();
  process to_carol{
    {binary("convoke"), "send", "-s", srv.address(), "-n", "x", "-t", "carol", "psst"}};
  ASSERT_EQ(to_carol.wait(5s), 0) << to_carol.err();
  process to_dave{{binary("convoke"), "send", "-s", srv.address(), "-n", "x", "-t", "dave", "hey"}};
  ASSERT_EQ(to_dave.wait(5s), 0) << to_dave.err();
  process news{{binary("convoke"), "send", "-s", srv.address(), "-n", "x", "-r", "news", "flash"}};
  ASSERT_EQ(news.wait(5s), 0) << news.err();
  ASSERT_TRUE(carol.wait_output("flash", 5s)) << carol.out();
  EXPECT_NE(carol.out().find("x -> carol (direct): psst"), std::string::npos) << carol.out();
  EXPECT_NE(carol.out().find("x -> * [news]: flash"), std::string::npos) << carol.out();
  EXPECT_EQ(carol.out().find("goal"), std::string::npos) << carol.out();
  ASSERT_TRUE(dave.wait_output("flash", 5s)) << dave.out();
  int direct = 0;
  for (auto& j : json_lines(dave.out()))
    if (j["event"] == "message") {
      EXPECT_EQ(j.value("direct", false), j["to"] == "dave") << j.dump();
      direct += j.value("direct", false) ? 1 : 0;
    }
  EXPECT_EQ(direct, 1);
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0);
}
