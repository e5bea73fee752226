// The `convoke` CLI with several servers (--server a,b or CONVOKE_SERVER):
// `listen --reconnect` follows its agent to the surviving server when the
// first is killed (SIGKILL); `send` without --reconnect still tries each
// server once for its session; a list that mixes TLS and plaintext is a
// usage error.

#include <gtest/gtest.h>

#include <csignal>

#include "raw_client.hpp"
#include "server_process.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

TEST(CliFailover, ListenFollowsItsAgentToTheSurvivorOfAKill) {
  server_process p1;
  server_process p2;
  process cli{{binary("convoke"), "listen", "--server", p1.address() + "," + p2.address(), "--name",
               "cli", "--reconnect", "--json"}};
  ASSERT_TRUE(cli.wait_output("\"event\":\"connected\"", 5s)) << cli.err();
  EXPECT_NE(cli.out().find("at " + p1.address()), std::string::npos) << cli.out();

  p1.proc->signal(SIGKILL);
  ASSERT_TRUE(cli.wait_output("\"event\":\"reconnected\"", 10s)) << cli.out() << cli.err();
  EXPECT_NE(cli.out().find("at " + p2.address()), std::string::npos) << cli.out();
  EXPECT_NE(cli.out().find("reconnecting to " + p2.address()), std::string::npos)
    << "the CLI says where it goes: " << cli.out();

  raw_client pub{p2.port};
  ASSERT_TRUE(pub.hello("pub").has_welcome());
  ASSERT_TRUE(pub.send_envelope("cli", "after the kill"));
  ASSERT_TRUE(cli.wait_output("after the kill", 5s)) << cli.out() << cli.err();
  cli.signal(SIGTERM);
  EXPECT_EQ(cli.wait(5s), 0) << cli.err();
}

TEST(CliFailover, SendTriesEachServerOfConvokeServerOnce) {
  // Without --reconnect: the dead first address fails, the second takes
  // the message, and the command succeeds.
  server_process p;
  raw_client rx{p.port};
  ASSERT_TRUE(rx.hello("rx").has_welcome());
  process cli{{binary("convoke"), "send", "--to", "rx", "--name", "tx", "through the second"},
              {},
              {{"CONVOKE_SERVER", "127.0.0.1:1," + p.address()}}};
  EXPECT_EQ(cli.wait(10s), 0) << cli.err();
  auto e = rx.read_envelope(5s);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "through the second");
  EXPECT_NE(cli.err().find("127.0.0.1:1"), std::string::npos)
    << "the failed attempt is said: " << cli.err();

  // Every server down: exit 1 after one round, not a retry loop.
  process none{{binary("convoke"), "send", "--server", "127.0.0.1:1,127.0.0.1:1", "x"}};
  EXPECT_EQ(none.wait(10s), 1) << none.err();
}

TEST(CliFailover, AListMixingTlsAndPlaintextIsAUsageError) {
  process cli{{binary("convoke"), "send", "--server", "tls://127.0.0.1:7420,127.0.0.1:7421", "x"}};
  EXPECT_EQ(cli.wait(10s), 2);
  EXPECT_NE(cli.err().find("mixes tls:// and plaintext"), std::string::npos) << cli.err();
  process empty{{binary("convoke"), "send", "--server", "127.0.0.1:7420,", "x"}};
  EXPECT_EQ(empty.wait(10s), 2);
  EXPECT_NE(empty.err().find("empty address"), std::string::npos) << empty.err();
}
