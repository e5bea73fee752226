// End to end: the `convoke` CLI's additions for operators and chat users,
// with real convoke-server and convoke processes: --version, chat's /who,
// unknown commands and //text, direct messages in `listen`.

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
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

// -- against a real server's admin listener ------------------------------------

namespace {

std::string admin_url(const server_process& srv) {
  return "http://127.0.0.1:" + std::to_string(srv.admin_port);
}

/// Runs `convoke-server credentials add FILE NAME args...`; returns the
/// token it printed.
std::string add_identity(const std::string& file, const std::string& name,
                         std::vector<std::string> args) {
  std::vector<std::string> argv{binary("convoke-server"), "credentials", "add", file, name};
  argv.insert(argv.end(), args.begin(), args.end());
  process p{argv};
  EXPECT_EQ(p.wait(30s), 0) << p.err();
  auto token = p.out();
  while (!token.empty() && token.back() == '\n')
    token.pop_back();
  return token;
}

} // namespace

TEST(CliOps, ServerCheckAgentsAndTopReadARealServer) {
  server_process srv;
  ASSERT_NE(srv.admin_port, 0);
  auto admin = admin_url(srv);
  process bob{{binary("convoke"), "listen", "-s", srv.address(), "-n", "bob"}};
  process news{{binary("convoke"), "listen", "-s", srv.address(), "-n", "newsdesk", "-r", "news"}};
  ASSERT_TRUE(bob.wait_output("connected: bob", 5s)) << bob.err();
  ASSERT_TRUE(news.wait_output("connected: newsdesk", 5s)) << news.err();

  process check{{binary("convoke"), "server", "check", "--admin", admin}};
  ASSERT_EQ(check.wait(10s), 0) << check.out() << check.err();
  EXPECT_EQ(
    check.out().rfind(std::string{"OK: convoke "} + CONVOKE_VERSION + " ready agents=2 ", 0), 0u)
    << check.out();
  process too_few{{binary("convoke"), "server", "check", "--admin", admin, "--min-agents", "3"}};
  EXPECT_EQ(too_few.wait(10s), 2) << too_few.out();

  process agents{{binary("convoke"), "agents", "--admin", admin}};
  ASSERT_EQ(agents.wait(10s), 0) << agents.err();
  auto table = agents.out();
  auto bob_row = table.substr(table.find("\nbob "));
  bob_row = bob_row.substr(1, bob_row.find('\n', 1));
  EXPECT_NE(bob_row.find("convoke-cpp/"), std::string::npos) << table;
  EXPECT_NE(bob_row.find("(all)"), std::string::npos) << table;
  EXPECT_NE(table.find("newsdesk"), std::string::npos) << table;
  EXPECT_LT(table.find("\nbob "), table.find("\nnewsdesk ")) << "sorted by name";
  process filtered{{binary("convoke"), "agents", "--admin", admin, "--name", "news", "--json"}};
  ASSERT_EQ(filtered.wait(10s), 0) << filtered.err();
  auto rows = json_lines(filtered.out());
  ASSERT_EQ(rows.size(), 1u) << filtered.out();
  EXPECT_EQ(rows[0]["name"], "newsdesk");
  EXPECT_EQ(rows[0]["routes"], json::array({"news"}));

  // Messages between two snapshots of top: newsdesk's in/out counts move.
  process top{{binary("convoke"), "top", "--admin", admin, "--iterations", "2", "--interval",
               "300ms", "--sort", "name"}};
  process burst{{binary("convoke"), "send", "-s", srv.address(), "-n", "burst", "-r", "news"},
                "1\n2\n3\n4\n5\n"};
  ASSERT_EQ(burst.wait(10s), 0) << burst.err();
  ASSERT_EQ(top.wait(10s), 0) << top.err();
  auto screens = top.out();
  EXPECT_EQ(screens.find('\x1b'), std::string::npos);
  EXPECT_NE(screens.find(std::string{"convoke "} + CONVOKE_VERSION + " at " + admin),
            std::string::npos)
    << screens;
  EXPECT_NE(screens.find("\nbob "), std::string::npos) << screens;
  EXPECT_NE(screens.find("\nnewsdesk "), std::string::npos) << screens;
  EXPECT_TRUE(news.wait_output("burst -> * [news]: 5", 5s)) << news.out();
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0);
}

TEST(CliOps, ServerCheckNeedsAnAdminIdentityWhenTheServerHasCredentials) {
  temp_dir dir;
  auto creds = dir.file("credentials.toml");
  auto ops_token = add_identity(creds, "ops", {"--admin"});
  auto agent_token = add_identity(creds, "worker", {"--all"});
  server_process srv{{"--auth.credentials", creds, "--auth.failed-login-delay", "0s"}};
  ASSERT_NE(srv.admin_port, 0);
  auto admin = admin_url(srv);
  std::ofstream{dir.file("ops.token")} << ops_token << "\n";
  std::ofstream{dir.file("worker.token")} << agent_token << "\n";

  process anonymous{{binary("convoke"), "server", "check", "--admin", admin}};
  EXPECT_EQ(anonymous.wait(10s), 3) << anonymous.out();
  EXPECT_NE(anonymous.out().find("answered 401"), std::string::npos) << anonymous.out();
  process not_admin{{binary("convoke"), "server", "check", "--admin", admin, "--identity", "worker",
                     "--token-file", dir.file("worker.token")}};
  EXPECT_EQ(not_admin.wait(10s), 3) << not_admin.out();
  EXPECT_NE(not_admin.out().find("answered 403"), std::string::npos) << not_admin.out();
  process ops{{binary("convoke"), "server", "check", "--admin", admin, "--identity", "ops",
               "--token-file", dir.file("ops.token")}};
  EXPECT_EQ(ops.wait(10s), 0) << ops.out() << ops.err();
  process listing{{binary("convoke"), "agents", "--admin", admin},
                  {},
                  {{"CONVOKE_IDENTITY", "ops"}, {"CONVOKE_TOKEN", ops_token}}};
  EXPECT_EQ(listing.wait(10s), 0) << listing.err();
  EXPECT_EQ(listing.out(), "no agents connected\n");
}

TEST(CliOps, ServerCheckWarnsWhileTheServerIsInLameDuckMode) {
  // A long grace: the server stays up, draining, while the checks run.
  server_process srv{{"--lame-duck.grace", "20s", "--lame-duck.duration", "60s"}};
  ASSERT_NE(srv.admin_port, 0);
  auto admin = admin_url(srv);
  process before{{binary("convoke"), "server", "check", "--admin", admin}};
  ASSERT_EQ(before.wait(10s), 0) << before.out();
  srv.proc->signal(SIGUSR2);
  ASSERT_TRUE(srv.proc->wait_output("entering lame-duck mode", 5s)) << srv.proc->err();
  process warning{{binary("convoke"), "server", "check", "--admin", admin}};
  EXPECT_EQ(warning.wait(10s), 1) << warning.out();
  EXPECT_EQ(warning.out().rfind("WARNING: ", 0), 0u) << warning.out();
  EXPECT_NE(warning.out().find(" draining "), std::string::npos) << warning.out();
  process critical{{binary("convoke"), "server", "check", "--admin", admin, "--draining-critical"}};
  EXPECT_EQ(critical.wait(10s), 2) << critical.out();
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0);
}
