// The cluster link over mutual TLS (cluster.tls-*, docs/cluster.md): real
// convoke-server processes, certificates made at test time, the convoke CLI
// as agents, OpenSSL's s_client as an outside TLS client.

#include <gtest/gtest.h>

#include <csignal>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "process.hpp"
#include "server_process.hpp"
#include "test_certs.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// A cluster node: fast heartbeats and retries, so that the tests wait for
/// events, not for defaults. `tls`: the three cluster.tls-* files, or none.
struct node {
  temp_dir files;
  std::unique_ptr<server_process> srv;
  uint16_t cluster_port = 0;

  node(const std::string& name, std::vector<std::string> tls, const std::string& peers = {}) {
    std::vector<std::string> args{
      "--cluster.name",      "prod",        "--cluster.node",      name,
      "--cluster.listen",    "127.0.0.1:0", "--cluster.port-file", files.file("cluster-port"),
      "--cluster.heartbeat", "200ms",       "--cluster.timeout",   "1s",
      "--cluster.retry",     "200ms",       "--timeouts.drain",    "1s"};
    if (!tls.empty()) {
      std::vector<std::string> keys{"--cluster.tls-cert", tls.at(0), "--cluster.tls-key", tls.at(1),
                                    "--cluster.tls-ca",   tls.at(2)};
      args.insert(args.end(), keys.begin(), keys.end());
    }
    if (!peers.empty()) {
      args.push_back("--cluster.peers");
      args.push_back(peers);
    }
    srv = std::make_unique<server_process>(args);
    // Written before the relay's port file, which server_process waited for.
    cluster_port = static_cast<uint16_t>(std::stoi(read_file(files.file("cluster-port"))));
  }

  std::string cluster_addr() const {
    return "127.0.0.1:" + std::to_string(cluster_port);
  }

  /// /varz's cluster peers (empty if /varz does not answer).
  json varz_peers() const {
    httplib::Client c{"127.0.0.1", srv->admin_port};
    c.set_read_timeout(5);
    auto r = c.Get("/varz");
    if (!r || r->status != 200)
      return json::array();
    return json::parse(r->body).at("cluster").at("peers");
  }

  /// The node names /varz lists as cluster peers.
  std::vector<std::string> peers() const {
    std::vector<std::string> out;
    for (auto& p : varz_peers())
      out.push_back(p.at("node").get<std::string>());
    return out;
  }

  /// How many agents of node `name` this node knows of (-1: not a peer).
  int agents_of(const std::string& name) const {
    for (auto& p : varz_peers())
      if (p.at("node") == name)
        return p.at("agents").get<int>();
    return -1;
  }

  process& proc() {
    return *srv->proc;
  }
};

using names = std::vector<std::string>;

/// `openssl s_client` against `port` with `extra` flags; stdin is empty, so
/// it ends after the handshake.
std::string s_client(uint16_t port, std::vector<std::string> extra) {
  std::vector<std::string> argv{"/usr/bin/openssl", "s_client", "-connect",
                                "127.0.0.1:" + std::to_string(port)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  process p{argv};
  EXPECT_TRUE(p.wait(10s).has_value());
  return p.out() + p.err();
}

} // namespace

namespace {

/// Runs `convoke listen` as `name` on `srv` and waits until it is connected.
std::unique_ptr<process> listener(const server_process& srv, const std::string& name) {
  auto p = std::make_unique<process>(std::vector<std::string>{
    binary("convoke"), "listen", "--server", srv.address(), "--name", name, "--json"});
  EXPECT_TRUE(p->wait_output("\"event\":\"connected\"", 5s)) << p->err();
  return p;
}

/// `convoke send` from `srv` to `to`; its exit code.
int cli_send(const server_process& srv, const std::string& from, const std::string& to,
             const std::string& text) {
  process p{
    {binary("convoke"), "send", "--server", srv.address(), "--name", from, "--to", to, text}};
  auto rc = p.wait(5s);
  EXPECT_TRUE(rc.has_value());
  return rc.value_or(-1);
}

} // namespace

TEST(ClusterTls, TwoNodesWithCertificatesOfTheClusterCaRelayAcrossAndSurviveAStop) {
  test_certs certs;
  auto a_cert = certs.issue("node-a", "node-a", {"localhost"}, {"127.0.0.1"});
  auto b_cert = certs.issue("node-b", "node-b", {"localhost"}, {"127.0.0.1"});
  node a{"a", {a_cert.cert, a_cert.key, certs.ca}};
  EXPECT_TRUE(a.proc().wait_output("cluster tls enabled verify=require", 5s)) << a.proc().err();
  EXPECT_TRUE(a.proc().wait_output("tls=mutual", 5s)) << a.proc().err();
  node b{"b", {b_cert.cert, b_cert.key, certs.ca}, a.cluster_addr()};
  ASSERT_TRUE(eventually([&] { return a.peers() == names{"b"} && b.peers() == names{"a"}; }, 10s))
    << a.proc().err() << b.proc().err();

  // An agent on each node; direct messages cross the link both ways.
  auto bob = listener(*b.srv, "bob");
  auto carol = listener(*a.srv, "carol");
  ASSERT_TRUE(eventually([&] { return a.agents_of("b") == 1 && b.agents_of("a") == 1; }, 10s));
  EXPECT_EQ(cli_send(*a.srv, "alice", "bob", "a to b over tls"), 0);
  EXPECT_TRUE(bob->wait_output("a to b over tls", 5s)) << bob->out() << bob->err();

  // A failed handshake on a's cluster port (no client certificate) must
  // not disturb a's link to b (OpenSSL's error queue, docs/cluster.md).
  auto refused = s_client(a.cluster_port, {"-CAfile", certs.ca, "-ign_eof"});
  EXPECT_NE(refused.find("certificate required"), std::string::npos) << refused;
  EXPECT_EQ(cli_send(*b.srv, "dave", "carol", "b to a after the probe"), 0);
  EXPECT_TRUE(carol->wait_output("b to a after the probe", 5s)) << carol->out() << carol->err();
  EXPECT_EQ(cli_send(*a.srv, "alice", "bob", "a to b after the probe"), 0);
  EXPECT_TRUE(bob->wait_output("a to b after the probe", 5s)) << bob->out() << bob->err();
  EXPECT_EQ(a.proc().err().find("cluster peer lost"), std::string::npos) << a.proc().err();
  EXPECT_EQ(b.proc().err().find("cluster peer lost"), std::string::npos) << b.proc().err();

  // BASP heartbeats run over TLS too: a stopped node is lost within
  // cluster.timeout, and rejoins when it goes on.
  b.proc().signal(SIGSTOP);
  EXPECT_TRUE(a.proc().wait_output("cluster peer lost node=b", 5s)) << a.proc().err();
  EXPECT_TRUE(eventually([&] { return a.peers().empty(); }, 5s));
  b.proc().signal(SIGCONT);
  EXPECT_TRUE(eventually([&] { return a.peers() == names{"b"} && b.peers() == names{"a"}; }, 10s))
    << a.proc().err() << b.proc().err();

  b.proc().signal(SIGTERM);
  a.proc().signal(SIGTERM);
  EXPECT_EQ(b.proc().wait(10s), 0) << b.proc().err();
  EXPECT_EQ(a.proc().wait(10s), 0) << a.proc().err();
}

TEST(ClusterTls, NodesWithoutACertificateOfTheClusterCaAreRefused) {
  test_certs certs;
  auto a_cert = certs.issue("node-a", "node-a", {"localhost"}, {"127.0.0.1"});
  auto b_cert = certs.issue("node-b", "node-b", {"localhost"}, {"127.0.0.1"});
  // A node of another CA (a node whose own certificate does not verify
  // against its cluster.tls-ca does not start: Config.ClusterTlsFiles...).
  auto x_cert = certs.issue("node-x", "node-x", {"localhost"}, {"127.0.0.1"}, true);
  node a{"a", {a_cert.cert, a_cert.key, certs.ca}};

  node x{"x", {x_cert.cert, x_cert.key, certs.other_ca}, a.cluster_addr()};
  // Plain BASP, no TLS at all.
  node plain{"plain", {}, a.cluster_addr()};
  // Each logs why it could not join (once per reason).
  EXPECT_TRUE(x.proc().wait_output("cluster peer refused addr=" + a.cluster_addr(), 10s))
    << x.proc().err();
  EXPECT_TRUE(plain.proc().wait_output("cluster peer refused addr=" + a.cluster_addr(), 10s))
    << plain.proc().err();

  // A node with a good certificate still joins, and only it.
  node b{"b", {b_cert.cert, b_cert.key, certs.ca}, a.cluster_addr()};
  ASSERT_TRUE(eventually([&] { return a.peers() == names{"b"} && b.peers() == names{"a"}; }, 10s))
    << a.proc().err() << b.proc().err();
  EXPECT_EQ(a.peers(), names{"b"});
  EXPECT_EQ(x.peers(), names{});
  EXPECT_EQ(plain.peers(), names{});
  EXPECT_TRUE(a.proc().running());

  // An agent on the refused node is not seen by the cluster: a message to
  // it from node a is not delivered.
  auto xavier = listener(*x.srv, "xavier");
  auto bob = listener(*b.srv, "bob");
  ASSERT_TRUE(eventually([&] { return a.agents_of("b") == 1; }, 10s));
  EXPECT_EQ(cli_send(*a.srv, "alice", "xavier", "not across"), 1); // unknown_recipient
  EXPECT_EQ(cli_send(*a.srv, "alice", "bob", "across"), 0);
  EXPECT_TRUE(bob->wait_output("across", 5s)) << bob->out() << bob->err();
  EXPECT_EQ(xavier->out().find("not across"), std::string::npos);
  // The refusals never disturbed the good link.
  EXPECT_EQ(a.proc().err().find("cluster peer lost"), std::string::npos) << a.proc().err();
}

TEST(ClusterTls, TheClusterPortIsATlsServerThatAsksForAClientCertificate) {
  test_certs certs;
  auto a_cert = certs.issue("node-a", "node-a", {"localhost"}, {"127.0.0.1"});
  node a{"a", {a_cert.cert, a_cert.key, certs.ca}};

  // Without a client certificate: the server asks for one (a
  // CertificateRequest, without CA names), and the handshake fails.
  auto anon = s_client(a.cluster_port, {"-CAfile", certs.ca, "-verify_return_error", "-ign_eof"});
  EXPECT_NE(anon.find("client certificate CA names sent"), std::string::npos) << anon;
  EXPECT_NE(anon.find("CN = node-a"), std::string::npos) << anon;
  EXPECT_NE(anon.find("certificate required"), std::string::npos) << anon;

  // With a node certificate of the cluster CA: verified both ways.
  auto b_cert = certs.issue("node-b", "node-b", {"localhost"}, {"127.0.0.1"});
  auto member = s_client(a.cluster_port, {"-CAfile", certs.ca, "-verify_return_error", "-cert",
                                          b_cert.cert, "-key", b_cert.key});
  EXPECT_NE(member.find("Verify return code: 0 (ok)"), std::string::npos) << member;
  EXPECT_EQ(member.find("certificate required"), std::string::npos) << member;

  // A certificate of another CA: the server refuses it.
  auto other = certs.issue("node-x", "node-x", {"localhost"}, {"127.0.0.1"}, true);
  auto refused = s_client(
    a.cluster_port, {"-CAfile", certs.ca, "-cert", other.cert, "-key", other.key, "-ign_eof"});
  EXPECT_NE(refused.find("alert unknown ca"), std::string::npos) << refused;
  EXPECT_TRUE(a.proc().running());
  EXPECT_EQ(a.peers(), names{});
}
