// An agent given several servers (the nodes of a cluster) over real
// sockets: it moves on when its server stops, when its server process is
// killed (SIGKILL), and when a draining server names where to go
// (Goodbye.reconnect_to: a real cluster node on SIGTERM, and fake servers),
// presenting its resume token wherever it lands.
// What no real server sends yet (reconnect_to, name_conflict) comes from a
// fake server that speaks the server's side frame by frame.

#include <gtest/gtest.h>

#include <signal.h>

#include <mutex>

#include "convoke/proto/rules.hpp"
#include "fake_server.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "test_agent.hpp"
#include "test_server.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

namespace codes = proto::codes;

std::string local(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

/// Options for an agent that goes round `addresses` (fast backoff).
client_options servers(const std::vector<std::string>& addresses) {
  auto opts = local_options(0);
  opts.servers.clear();
  for (auto& a : addresses) {
    auto parsed = parse_server_address(a);
    EXPECT_TRUE(parsed) << a;
    if (parsed)
      opts.servers.push_back(*parsed);
  }
  return opts;
}

/// An agent that records where it connects ("at:ADDRESS"), keeps its
/// disconnect infos, and answers every direct message with "echo:" + it.
class roaming_agent : public lambda_agent {
public:
  explicit roaming_agent(std::string name, event_log* log) : lambda_agent(std::move(name), log) {
    on_connected = [this](const session_info& s) { record("at:" + s.server); };
    on_msg = [this](const message& m) {
      if (!m.sender.empty())
        (void) send_to(m.sender, "echo:" + m.payload);
    };
    on_disconnected = [this](const disconnect_info& d) {
      std::lock_guard guard{mtx_};
      ends_.push_back(d);
    };
  }

  std::vector<disconnect_info> ends() const {
    std::lock_guard guard{mtx_};
    return ends_;
  }

private:
  mutable std::mutex mtx_;
  std::vector<disconnect_info> ends_;
};

/// A peer on `port` says something to `name` and expects the echo.
void expect_echo(uint16_t port, const std::string& name, const std::string& text) {
  raw_client peer{port};
  ASSERT_TRUE(peer.hello("peer-" + text).has_welcome());
  peer.send_envelope(name, text);
  auto e = peer.read_envelope(5s);
  ASSERT_TRUE(e.has_value()) << "no echo from " << name << " on port " << port;
  EXPECT_EQ(e->sender(), name);
  EXPECT_EQ(e->payload(), "echo:" + text);
}

/// Reads the agent's Hello on a fake server's connection.
v1::Hello read_hello(raw_client& c) {
  auto f = c.read(5s);
  EXPECT_TRUE(f && f->has_hello()) << "no Hello";
  return f && f->has_hello() ? f->hello() : v1::Hello{};
}

} // namespace

TEST(Failover, AnAgentMovesToTheNextServerWhenItsServerStops) {
  // The first address refuses (nothing listens on port 1): the next one is
  // tried at once. When that server shuts down, the agent goes on to the
  // third, where it sends and receives as before.
  test_server srv1;
  test_server srv2;
  event_log log;
  roaming_agent a{"roamer", &log};
  runtime rt;
  rt.start(a, servers({local(1), local(srv1.port()), local(srv2.port())}));
  ASSERT_TRUE(log.wait_for("at:" + local(srv1.port())));
  auto first = a.ends();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].code, "connect_failed");
  EXPECT_EQ(first[0].server, local(1));
  EXPECT_EQ(first[0].next_server, local(srv1.port()));
  EXPECT_EQ(first[0].retry_in, 0ms) << "a fresh server is tried at once";
  expect_echo(srv1.port(), "roamer", "one");

  srv1.stop(); // Goodbye(shutdown), then the port is closed
  ASSERT_TRUE(log.wait_for("at:" + local(srv2.port())));
  auto ends = a.ends();
  ASSERT_GE(ends.size(), 2u);
  EXPECT_EQ(ends[1].code, codes::shutdown);
  EXPECT_EQ(ends[1].server, local(srv1.port()));
  EXPECT_EQ(ends[1].next_server, local(srv2.port())) << "the next server, not the one that left";
  expect_echo(srv2.port(), "roamer", "two");
  EXPECT_EQ(log.count("reconnect"), 1u);
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Failover, AnAgentOfAKilledServerProcessCarriesOnAtTheOther) {
  server_process p1;
  server_process p2;
  event_log log;
  roaming_agent a{"survivor", &log};
  runtime rt;
  rt.start(a, servers({p1.address(), p2.address()}));
  ASSERT_TRUE(log.wait_for("at:" + p1.address()));
  expect_echo(p1.port, "survivor", "before");

  p1.proc->signal(SIGKILL); // no Goodbye: the connection just ends
  ASSERT_TRUE(log.wait_for("at:" + p2.address(), 10s));
  auto ends = a.ends();
  ASSERT_FALSE(ends.empty());
  EXPECT_EQ(ends[0].server, p1.address());
  EXPECT_NE(ends[0].code, codes::shutdown) << "a killed server says nothing";
  EXPECT_TRUE(ends[0].will_reconnect);
  expect_echo(p2.port, "survivor", "after");
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Failover, AnAgentOfADrainingClusterNodeFollowsItsHintToAnotherNode) {
  // Two real nodes of one cluster. The agent knows only the first; on
  // SIGTERM that node says Goodbye(shutdown) naming the other node, where
  // the agent resumes its name with its resume token.
  temp_dir ports;
  server_process n1{{"--cluster.name", "failover", "--cluster.node", "n1", "--cluster.listen",
                     "127.0.0.1:0", "--cluster.port-file", ports.file("n1")}};
  auto n1_file = read_file(ports.file("n1"));
  ASSERT_FALSE(n1_file.empty()) << "written before the client port file";
  auto n1_cluster = std::to_string(std::stoi(n1_file));
  server_process n2{{"--cluster.name", "failover", "--cluster.node", "n2", "--cluster.listen",
                     "127.0.0.1:0", "--cluster.peers", "127.0.0.1:" + n1_cluster}};
  ASSERT_TRUE(n1.proc->wait_output("cluster peer up node=n2", 10s)) << n1.proc->err();
  ASSERT_TRUE(n2.proc->wait_output("cluster peer up node=n1", 10s)) << n2.proc->err();

  event_log log;
  roaming_agent a{"drifter", &log};
  runtime rt;
  rt.start(a, servers({n1.address()}));
  ASSERT_TRUE(log.wait_for("at:" + n1.address()));
  n1.proc->signal(SIGTERM);
  ASSERT_TRUE(log.wait_for("at:" + n2.address(), 10s)) << n1.proc->err();
  auto ends = a.ends();
  ASSERT_FALSE(ends.empty());
  EXPECT_EQ(ends[0].code, codes::shutdown);
  EXPECT_EQ(ends[0].reconnect_to, (std::vector<std::string>{n2.address()}));
  EXPECT_EQ(ends[0].next_server, n2.address());
  expect_echo(n2.port, "drifter", "elsewhere");
  EXPECT_EQ(n1.proc->wait(10s), 0) << n1.proc->err();
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Failover, ADrainingServersReconnectToComesFirstAndTheResumeTokenTravels) {
  // A sends the agent to B, B (after a Welcome) to the real server C: each
  // Hello carries the name and the resume token of the session before.
  fake_server fa;
  fake_server fb;
  test_server c;
  event_log log;
  roaming_agent a{"mover", &log};
  runtime rt;
  // The agent's own list does not even contain B or C.
  rt.start(a, servers({fa.address()}));

  auto ca = fa.accept();
  ASSERT_TRUE(ca);
  auto hello = read_hello(*ca);
  EXPECT_EQ(hello.agent_name(), "mover");
  EXPECT_TRUE(hello.resume_token().empty()) << "a first Hello has no token";
  ca->send(fake_server::welcome("mover", 1, "token-from-a"));
  ASSERT_TRUE(log.wait_for("at:" + fa.address()));
  ca->send(fake_server::goodbye(std::string{codes::shutdown}, "draining", {fb.address()}, 50));
  ca->close();

  auto cb = fb.accept();
  ASSERT_TRUE(cb) << "the agent went to the address the Goodbye named";
  hello = read_hello(*cb);
  EXPECT_EQ(hello.agent_name(), "mover");
  EXPECT_EQ(hello.resume_token(), "token-from-a") << "to take the name over on another node";
  cb->send(fake_server::welcome("mover", 2, "token-from-b"));
  ASSERT_TRUE(log.wait_for("at:" + fb.address()));
  cb->send(fake_server::goodbye(std::string{codes::lame_duck}, "going away", {local(c.port())}));
  cb->close();

  ASSERT_TRUE(log.wait_for("at:" + local(c.port())));
  expect_echo(c.port(), "mover", "landed");
  auto ends = a.ends();
  ASSERT_EQ(ends.size(), 2u);
  EXPECT_EQ(ends[0].code, codes::shutdown);
  EXPECT_EQ(ends[0].reconnect_to, (std::vector<std::string>{fb.address()}));
  EXPECT_EQ(ends[0].reconnect_hint, 50ms);
  EXPECT_EQ(ends[0].retry_in, 50ms) << "reconnect_after_ms is honoured";
  EXPECT_EQ(ends[1].code, codes::lame_duck);
  EXPECT_EQ(ends[1].next_server, local(c.port()));
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Failover, ReconnectToAddressesThatAreWrongOrHostileAreIgnored) {
  // A plaintext connection may not send the agent to TLS (nor a TLS one to
  // plaintext), and junk is junk: the agent goes on with its own list.
  fake_server fa;
  test_server d;
  event_log log;
  roaming_agent a{"wary", &log};
  runtime rt;
  rt.start(a, servers({fa.address(), local(d.port())}));
  auto ca = fa.accept();
  ASSERT_TRUE(ca);
  read_hello(*ca);
  ca->send(fake_server::welcome("wary", 1, "t"));
  ASSERT_TRUE(log.wait_for("at:" + fa.address()));
  ca->send(fake_server::goodbye(std::string{codes::shutdown}, "draining",
                                {"tls://127.0.0.1:" + std::to_string(d.port()), "127.0.0.1",
                                 "evil\r\nhost:1", std::string(1000, 'x') + ":1"}));
  ca->close();
  ASSERT_TRUE(log.wait_for("at:" + local(d.port())));
  auto ends = a.ends();
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_TRUE(ends[0].reconnect_to.empty());
  EXPECT_EQ(ends[0].reconnect_to_ignored, 4);
  EXPECT_FALSE(fa.accept(0ms)) << "nothing went back to the draining server first";
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Failover, ANameConflictEndsTheAgentWithAnErrorAndNoOtherServerIsTried) {
  fake_server fa;
  fake_server fb;
  event_log log;
  roaming_agent a{"twin", &log};
  runtime rt;
  rt.start(a, servers({fa.address(), fb.address()}));
  auto ca = fa.accept();
  ASSERT_TRUE(ca);
  read_hello(*ca);
  ca->send(fake_server::welcome("twin", 1, "t"));
  ASSERT_TRUE(log.wait_for("at:" + fa.address()));
  ca->send(fake_server::goodbye(std::string{codes::name_conflict},
                                "node b accepted this name first", {fb.address()}));
  ca->close();
  EXPECT_EQ(rt.wait(), 1) << "like name_taken: the run ends with an error";
  auto ends = a.ends();
  ASSERT_EQ(ends.size(), 1u);
  EXPECT_EQ(ends[0].code, codes::name_conflict);
  EXPECT_FALSE(ends[0].will_reconnect);
  EXPECT_EQ(log.snapshot().back(), "teardown");
  EXPECT_FALSE(fb.accept(0ms)) << "the agent has ended: no connection to the other node";
}
