// Identities and rights with real processes: credentials written by
// `convoke-server credentials add`, a convoke-server process that loads
// them, raw protocol clients and the convoke CLI.

#include <gtest/gtest.h>

#include <csignal>

#include "convoke/proto/codec.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "test_certs.hpp"

#include <fstream>
#include <map>

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

/// Runs `convoke-server credentials add FILE NAME args...`; returns the
/// token it printed.
std::string add_identity(const std::string& file, const std::string& name,
                         std::vector<std::string> args = {}) {
  std::vector<std::string> argv{binary("convoke-server"), "credentials", "add", file, name};
  argv.insert(argv.end(), args.begin(), args.end());
  process p{argv};
  EXPECT_EQ(p.wait(30s), 0) << p.err();
  auto token = p.out();
  while (!token.empty() && token.back() == '\n')
    token.pop_back();
  EXPECT_EQ(token.size(), 64u) << "a fresh 256-bit token, hex: " << p.out();
  return token;
}

/// The next Notice (skipping heartbeats); its code and text.
std::string next_notice(raw_client& c) {
  auto n = c.read_kind(v1::Frame::kNotice, 5s);
  return n ? n->notice().code() + ": " + n->notice().text() : std::string{"(no notice)"};
}

struct secured {
  temp_dir dir;
  std::string creds = dir.file("credentials.toml");
  std::string alice, worker, mute;
  std::unique_ptr<server_process> srv;

  secured() {
    alice = add_identity(creds, "alice", {"--publish", "tasks.>", "--send", "worker,mute,bob"});
    worker
      = add_identity(creds, "worker", {"--publish", "", "--subscribe", "tasks.*", "--send", ""});
    mute = add_identity(creds, "mute", {"--no-receive"});
    srv = std::make_unique<server_process>(
      std::vector<std::string>{"--auth.credentials", creds, "--auth.failed-login-delay", "0s"});
  }
};

} // namespace

TEST(Security, EveryRightIsEnforcedAndADeniedActionLeavesTheSessionWorking) {
  secured s;
  auto port = s.srv->port;
  raw_client alice{port}, worker{port}, mute{port};
  ASSERT_TRUE(alice.login("", "alice", s.alice).has_welcome());
  auto w = worker.login("worker", "", s.worker); // identity named like the agent
  ASSERT_TRUE(w.has_welcome()) << w.ShortDebugString();
  EXPECT_EQ(w.welcome().agent_name(), "worker");
  ASSERT_TRUE(mute.login("mute", "mute", s.mute).has_welcome());

  // publish: allowed on tasks.>, denied elsewhere and without a route.
  ASSERT_TRUE(alice.send_envelope("", "job 1", "tasks.a", 1));
  ASSERT_TRUE(alice.send_envelope("", "leak", "secret", 2));
  ASSERT_TRUE(alice.send_envelope("", "to everyone", "", 3));
  auto n = alice.read_kind(v1::Frame::kNotice, 5s);
  ASSERT_TRUE(n) << "publish on 'secret' must be refused with a Notice";
  EXPECT_EQ(n->notice().code(), "permission_denied");
  EXPECT_EQ(n->notice().client_seq(), 2u);
  EXPECT_NE(n->notice().text().find("may not publish on route 'secret'"), std::string::npos)
    << n->notice().text();
  EXPECT_NE(next_notice(alice).find("may not broadcast without a route"), std::string::npos);
  // subscribe (restricted): the worker gets tasks.a; mute (subscribe '>')
  // gets it too; neither gets the refused ones.
  auto d = worker.read_delivery(5s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->envelope().payload(), "job 1");
  EXPECT_EQ(d->sender(), "alice") << "the sender every receiver sees is the authenticated name";
  // subscribe: denied for a route outside the right, the session goes on.
  v1::Frame sub;
  sub.mutable_subscribe()->add_routes("secret");
  ASSERT_TRUE(worker.send(sub));
  auto sn = next_notice(worker);
  EXPECT_NE(sn.find("permission_denied: identity 'worker' may not subscribe to 'secret'"),
            std::string::npos)
    << sn;
  // publish denied entirely; send denied entirely.
  ASSERT_TRUE(worker.send_envelope("", "result", "tasks.a", 7));
  EXPECT_NE(next_notice(worker).find("may not publish on route 'tasks.a'"), std::string::npos);
  ASSERT_TRUE(worker.send_envelope("alice", "psst", "", 8));
  EXPECT_NE(next_notice(worker).find("may not send direct messages to 'alice'"), std::string::npos);
  // send: allowed to worker, refused to an agent outside the right; receive
  // refused by mute's identity.
  ASSERT_TRUE(alice.send_envelope("mute", "hello mute", "", 10));
  EXPECT_NE(next_notice(alice).find("agent 'mute' may not receive direct messages"),
            std::string::npos);
  ASSERT_TRUE(alice.send_envelope("worker2", "hello", "", 11));
  EXPECT_NE(next_notice(alice).find("may not send direct messages to 'worker2'"),
            std::string::npos);
  ASSERT_TRUE(alice.send_envelope("worker", "direct job", "", 12));
  d = worker.read_delivery(5s);
  ASSERT_TRUE(d) << "after all the refusals the worker still receives";
  EXPECT_EQ(d->envelope().payload(), "direct job") << "nothing refused reached it";
  // mute (subscribe '>') saw the allowed broadcast, and nothing else.
  d = mute.read_delivery(5s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->envelope().payload(), "job 1");
  ASSERT_TRUE(alice.ping());
  ASSERT_TRUE(mute.ping());
  EXPECT_FALSE(mute.read_delivery(200ms)) << "a refused message reached mute";

  // Each refusal is traced with its reason.
  alice.close();
  worker.close();
  mute.close();
  s.srv->proc->signal(SIGTERM);
  ASSERT_EQ(s.srv->proc->wait(10s), 0) << s.srv->proc->err();
  int rejected = 0;
  for (auto& t : s.srv->trace())
    if (t["event"] == "rejected") {
      EXPECT_EQ(t["reason"], "permission_denied");
      ++rejected;
    }
  EXPECT_EQ(rejected, 6) << "secret, no route, worker's publish and send, mute, worker2";
  EXPECT_NE(s.srv->proc->err().find("permission_denied=7"), std::string::npos)
    << "six messages and one subscription: " << s.srv->proc->err();
}

TEST(Security, AnAgentMayReplyOnceToEachRequestItReceivedWhateverItsSendRight) {
  secured s;
  auto port = s.srv->port;
  raw_client alice{port}, worker{port};
  ASSERT_TRUE(alice.login("alice", "alice", s.alice).has_welcome());
  ASSERT_TRUE(worker.login("worker", "worker", s.worker).has_welcome());
  auto envelope = [](const std::string& to, const std::string& payload, uint64_t request_id,
                     uint64_t in_reply_to, uint64_t seq) {
    v1::Frame f;
    auto e = f.mutable_envelope();
    e->set_recipient(to);
    e->set_payload(payload);
    e->set_request_id(request_id);
    e->set_in_reply_to(in_reply_to);
    e->set_client_seq(seq);
    return f;
  };
  ASSERT_TRUE(alice.send(envelope("worker", "what is 6*7?", 77, 0, 1)));
  auto d = worker.read_delivery(5s);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->envelope().request_id(), 77u);
  // worker's send right is empty, yet it may answer that request, once.
  ASSERT_TRUE(worker.send(envelope("alice", "42", 0, 77, 1)));
  d = alice.read_delivery(5s);
  ASSERT_TRUE(d) << "the reply to a received request must pass";
  EXPECT_EQ(d->envelope().payload(), "42");
  EXPECT_EQ(d->sender(), "worker");
  ASSERT_TRUE(worker.send(envelope("alice", "42 again", 0, 77, 2)));
  auto n = next_notice(worker);
  EXPECT_NE(n.find("permission_denied: you may not send direct messages to 'alice' (right: "
                   "send), and it sent you no request 77"),
            std::string::npos)
    << n;
  ASSERT_TRUE(worker.send(envelope("alice", "unsolicited", 0, 78, 3)));
  EXPECT_NE(next_notice(worker).find("no request 78"), std::string::npos);
  ASSERT_TRUE(alice.ping());
  EXPECT_FALSE(alice.read_delivery(200ms)) << "a refused reply reached alice";
}

TEST(Security, LoginsAreCheckedAndFailuresSayLittleToTheGuesser) {
  secured s;
  auto port = s.srv->port;
  raw_client c{port};
  auto r = c.login("alice", "alice", std::string(64, '0'));
  ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "auth_failed");
  auto wrong_token_text = r.notice().text();
  raw_client c2{port};
  r = c2.login("nobody", "nobody", s.alice);
  EXPECT_EQ(r.notice().code(), "auth_failed");
  EXPECT_EQ(r.notice().text(), wrong_token_text) << "an unknown identity looks the same";
  raw_client c3{port};
  r = c3.login("short", "alice", "abc");
  EXPECT_EQ(r.notice().code(), "auth_failed") << "a token of the wrong length";
  raw_client c4{port};
  r = c4.login("bad\x01name", "alice", s.alice);
  EXPECT_EQ(r.notice().code(), "invalid_name") << "a control character in the name";
  // A right token for a name the identity may not use.
  raw_client c5{port};
  r = c5.login("mute", "alice", s.alice);
  ASSERT_TRUE(r.has_notice());
  EXPECT_EQ(r.notice().code(), "permission_denied");
  EXPECT_NE(r.notice().text().find("may not use the agent name 'mute'"), std::string::npos);
  // The log names the peer address of each failure, never the token.
  ASSERT_TRUE(s.srv->proc->wait_output("login failed", 5s));
  auto log = s.srv->proc->err();
  EXPECT_NE(log.find("remote=127.0.0.1:"), std::string::npos) << log;
  EXPECT_EQ(log.find(s.alice), std::string::npos) << "a token reached the log";
}

TEST(Security, TheCliTakesTokensFromAFileOrTheEnvironmentNeverFromArgv) {
  secured s;
  auto addr = s.srv->address();
  process listen{{binary("convoke"), "listen", "-s", addr, "-n", "mute", "--json", "-c", "1"},
                 {},
                 {{"CONVOKE_TOKEN", s.mute}}};
  ASSERT_TRUE(listen.wait_output("\"event\":\"connected\"", 10s)) << listen.err();
  auto token_file = s.dir.file("alice.token");
  {
    std::ofstream f{token_file};
    f << s.alice << "\n";
  }
  process send{{binary("convoke"), "send", "-s", addr, "--identity", "alice", "-n", "alice",
                "--token-file", token_file, "--route", "tasks.x", "from a file"}};
  ASSERT_EQ(send.wait(10s), 0) << send.err();
  ASSERT_EQ(listen.wait(10s), 0) << listen.err();
  EXPECT_NE(listen.out().find("from a file"), std::string::npos) << listen.out();
  process argv_token{{binary("convoke"), "send", "-s", addr, "--token", s.alice, "x"}};
  EXPECT_EQ(argv_token.wait(10s), 2);
  EXPECT_NE(argv_token.err().find("tokens are not taken from the command line"), std::string::npos)
    << argv_token.err();
  process denied{
    {binary("convoke"), "send", "-s", addr, "-n", "alice", "--route", "secret", "leak"},
    {},
    {{"CONVOKE_TOKEN", s.alice}}};
  EXPECT_EQ(denied.wait(10s), 1) << "a refused last message fails the command";
  EXPECT_NE(denied.err().find("permission_denied"), std::string::npos) << denied.err();
}

TEST(Security, ANonLoopbackServerRefusesToStartWithoutAuthAndTls) {
  process p{{binary("convoke-server"), "--listen.host", "0.0.0.0", "--listen.port", "0"}};
  EXPECT_EQ(p.wait(10s), 78);
  EXPECT_NE(p.err().find("agents are not authenticated"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("TLS is off"), std::string::npos) << p.err();
  temp_dir dir;
  process ok{{binary("convoke-server"), "--listen.host", "0.0.0.0", "--listen.port", "0",
              "--listen.port-file", dir.file("port"), "--allow-anonymous", "--allow-plaintext",
              "--trace.enabled", "false"}};
  ASSERT_TRUE(ok.wait_output("listening", 10s)) << ok.err();
  ok.signal(SIGTERM);
  EXPECT_EQ(ok.wait(10s), 0);
}

TEST(Security, AVerifiedClientCertificateNamesTheIdentityAndSighupReloadsIdentities) {
  test_certs certs; // the client certificate's CN is agent-a
  temp_dir dir;
  auto creds = dir.file("credentials.toml");
  add_identity(creds, "agent-a", {"--publish", "tasks.>"});
  auto alice = add_identity(creds, "alice");
  server_process srv{{"--tls.cert", certs.server.cert, "--tls.key", certs.server.key,
                      "--tls.client-ca", certs.ca, "--tls.verify-clients", "optional",
                      "--auth.credentials", creds, "--auth.failed-login-delay", "0s"}};
  auto url = "tls://127.0.0.1:" + std::to_string(srv.port);
  auto cli = [&](std::vector<std::string> args, bool client_cert,
                 std::map<std::string, std::string> env = {}) {
    std::vector<std::string> argv{binary("convoke")};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--server", url, "--tls-ca", certs.ca});
    if (client_cert)
      argv.insert(argv.end(), {"--tls-cert", certs.client.cert, "--tls-key", certs.client.key});
    return std::make_unique<process>(argv, std::string{}, env);
  };
  auto listen
    = cli({"listen", "-n", "alice", "--json", "-c", "1"}, false, {{"CONVOKE_TOKEN", alice}});
  ASSERT_TRUE(listen->wait_output("\"event\":\"connected\"", 10s)) << listen->err();
  // No token: the certificate is the proof, and its rights apply.
  auto denied = cli({"send", "-n", "agent-a", "--route", "secret", "x"}, true);
  EXPECT_EQ(denied->wait(10s), 1);
  EXPECT_NE(denied->err().find("permission_denied"), std::string::npos) << denied->err();
  auto sent = cli({"send", "-n", "agent-a", "--route", "tasks.1", "by certificate"}, true);
  EXPECT_EQ(sent->wait(10s), 0) << sent->err();
  ASSERT_EQ(listen->wait(10s), 0) << listen->err();
  EXPECT_NE(listen->out().find("by certificate"), std::string::npos) << listen->out();
  EXPECT_TRUE(srv.proc->wait_output("authenticated by client certificate", 5s));
  // Without a certificate and without a token, agent-a is nobody.
  auto nobody = cli({"send", "-n", "agent-a", "--route", "tasks.1", "x"}, false);
  EXPECT_EQ(nobody->wait(10s), 1);
  EXPECT_NE(nobody->err().find("auth_failed"), std::string::npos) << nobody->err();

  // SIGHUP: a new identity can log in; a broken file keeps the old ones.
  auto carol = add_identity(creds, "carol");
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output("credentials reloaded for new logins", 10s)) << srv.proc->err();
  auto by_carol
    = cli({"send", "-n", "carol", "--route", "x", "hi"}, false, {{"CONVOKE_TOKEN", carol}});
  EXPECT_EQ(by_carol->wait(10s), 0) << by_carol->err();
  std::ofstream{creds, std::ios::app} << "[identity.broken\n";
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output("credentials reload failed", 10s)) << srv.proc->err();
  auto still
    = cli({"send", "-n", "carol", "--route", "x", "hi"}, false, {{"CONVOKE_TOKEN", carol}});
  EXPECT_EQ(still->wait(10s), 0) << "the old identities stay: " << still->err();
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
}
