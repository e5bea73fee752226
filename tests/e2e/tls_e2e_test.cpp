// End to end over TLS: the built convoke-server and convoke binaries as
// separate processes, certificates made at test time, SIGHUP for reloads.

#include <gtest/gtest.h>

#include <csignal>

#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "test_certs.hpp"
#include "tls_client.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

TEST(EndToEndTls, CliAgentsOverMutualTlsAndTheServerLogsThePeerName) {
  test_certs certs;
  server_process srv{{"--tls.cert", certs.server.cert, "--tls.key", certs.server.key,
                      "--tls.client-ca", certs.ca, "--tls.verify-clients", "require"}};
  auto url = "tls://127.0.0.1:" + std::to_string(srv.port);
  std::vector<std::string> tls_flags{"--tls-ca",        certs.ca,    "--tls-cert",
                                     certs.client.cert, "--tls-key", certs.client.key};
  std::vector<std::string> listen{binary("convoke"), "listen", "--server", url,
                                  "--name",          "bob",    "--json"};
  listen.insert(listen.end(), tls_flags.begin(), tls_flags.end());
  process bob{listen};
  ASSERT_TRUE(bob.wait_output("\"event\":\"connected\"", 5s)) << bob.err();
  std::vector<std::string> send{binary("convoke"), "send",  "--server", url,
                                "--name",          "alice", "--to",     "bob",
                                "over mutual tls"};
  send.insert(send.end(), tls_flags.begin(), tls_flags.end());
  process alice{send};
  ASSERT_EQ(alice.wait(5s), 0) << alice.err();
  ASSERT_TRUE(bob.wait_output("over mutual tls", 5s)) << bob.out();
  // The verified certificate's name is the session's TLS peer name.
  EXPECT_TRUE(srv.proc->wait_output("peer=agent-a", 5s)) << srv.proc->err();

  // Without a client certificate: refused, and the CLI says why.
  process anon{
    {binary("convoke"), "send", "--server", url, "--tls-ca", certs.ca, "--to", "bob", "x"}};
  EXPECT_EQ(anon.wait(5s), 1);
  EXPECT_NE(anon.err().find("certificate required"), std::string::npos) << anon.err();
  // An untrusted server: the CLI names the verification failure.
  process untrusting{{binary("convoke"), "send", "--server", url, "--tls-ca", certs.other_ca,
                      "--tls-cert", certs.client.cert, "--tls-key", certs.client.key, "x"}};
  EXPECT_EQ(untrusting.wait(5s), 1);
  EXPECT_NE(untrusting.err().find("TLS handshake failed: certificate verify failed: "),
            std::string::npos)
    << untrusting.err() << "\nstdout: " << untrusting.out();
  // Plaintext: the tls_required Notice.
  process plain{{binary("convoke"), "send", "--server", srv.address(), "--to", "bob", "x"}};
  EXPECT_EQ(plain.wait(5s), 1);
  EXPECT_NE(plain.err().find("tls_required"), std::string::npos) << plain.err();
  // --tls-* flags without a tls:// address are a usage error.
  process usage{{binary("convoke"), "send", "--server", srv.address(), "--tls-ca", certs.ca, "x"}};
  EXPECT_EQ(usage.wait(5s), 2);

  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  EXPECT_EQ(bob.wait(5s), 0) << bob.err();
}

TEST(EndToEndTls, SighupReloadsTheCertificateForNewConnectionsAndKeepsItOnBadFiles) {
  test_certs certs;
  auto cert = (certs.dir / "live.crt").string();
  auto key = (certs.dir / "live.key").string();
  replace_file(certs.server.cert, cert);
  replace_file(certs.server.key, key);
  server_process srv{{"--tls.cert", cert, "--tls.key", key, "--timeouts.drain", "1s"}};
  tls_client before{srv.port, {certs.ca, "", "", "localhost"}};
  ASSERT_TRUE(before.ok()) << before.error();
  ASSERT_TRUE(before.hello("before").has_value());

  replace_file(certs.other_server.cert, cert);
  replace_file(certs.other_server.key, key);
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output("tls reloaded for new connections", 5s)) << srv.proc->err();
  EXPECT_TRUE(srv.proc->running()) << "SIGHUP must not end the server";
  tls_client after{srv.port, {certs.other_ca, "", "", "localhost"}};
  ASSERT_TRUE(after.ok()) << after.error();
  ASSERT_TRUE(after.hello("after").has_value());
  tls_client old_trust{srv.port, {certs.ca, "", "", "localhost"}};
  EXPECT_FALSE(old_trust.ok());
  // The session from before the reload still works.
  ASSERT_TRUE(after.send_envelope("before", "across the reload"));
  auto d = before.read_kind(v1::Frame::kDelivery);
  ASSERT_TRUE(d.has_value()) << before.error();
  EXPECT_EQ(d->delivery().envelope().payload(), "across the reload");

  // A key that does not belong to the certificate: logged, old one kept.
  replace_file(certs.client.key, key);
  srv.proc->signal(SIGHUP);
  ASSERT_TRUE(srv.proc->wait_output("tls reload failed, keeping the previous certificate", 5s))
    << srv.proc->err();
  EXPECT_NE(srv.proc->err().find("mismatch"), std::string::npos) << srv.proc->err();
  tls_client still{srv.port, {certs.other_ca, "", "", "localhost"}};
  EXPECT_TRUE(still.ok()) << still.error();

  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
}

TEST(EndToEndTls, StuckHandshakesAreClosedAtTheTimeoutWhileOthersRelay) {
  test_certs certs;
  server_process srv{{"--tls.cert", certs.server.cert, "--tls.key", certs.server.key,
                      "--timeouts.handshake", "500ms", "--timeouts.drain", "1s"}};
  std::vector<std::unique_ptr<raw_client>> stuck;
  for (int i = 0; i < 20; ++i) {
    stuck.push_back(std::make_unique<raw_client>(srv.port));
    ASSERT_TRUE(stuck.back()->send_bytes(std::string{"\x16\x03\x01\x02\x00", 5}));
  }
  tls_client a{srv.port, {certs.ca, "", "", "127.0.0.1"}};
  tls_client b{srv.port, {certs.ca, "", "", "127.0.0.1"}};
  ASSERT_TRUE(a.ok() && b.ok()) << a.error() << b.error();
  ASSERT_TRUE(a.hello("a").has_value());
  ASSERT_TRUE(b.hello("b").has_value());
  ASSERT_TRUE(a.send_envelope("b", "meanwhile"));
  auto d = b.read_kind(v1::Frame::kDelivery);
  ASSERT_TRUE(d.has_value()) << b.error();
  for (auto& s : stuck)
    EXPECT_TRUE(s->wait_closed(5s));
  EXPECT_TRUE(srv.proc->wait_output("tls handshake timeout", 1s));
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
}
