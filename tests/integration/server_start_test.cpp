// Start-up failures a program can tell apart by their error code, with the
// system's reason kept in the text: an address in use, a host that does not
// resolve, a refused connection, an unwritable trace file.

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>

#include "convoke/common/net.hpp"
#include "convoke/server/config.hpp"
#include "convoke/server/server.hpp"
#include "raw_client.hpp"
#include "test_certs.hpp"
#include "test_server.hpp"
#include "tls_client.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace std::chrono_literals;

namespace {

/// A TCP socket bound to 127.0.0.1 on a port the kernel picks, listening
/// or not. Closed at the end of the test.
struct bound_socket {
  int fd = -1;
  uint16_t port = 0;

  explicit bound_socket(bool listening) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0
        || (listening && ::listen(fd, 4) != 0)
        || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("cannot set up a socket on 127.0.0.1");
    port = ntohs(addr.sin_port);
  }

  ~bound_socket() {
    ::close(fd);
  }
};

constexpr const char* unresolvable = "no-such-host.invalid"; // RFC 6761: never resolves

} // namespace

TEST(ServerStart, AnAddressInUseIsTheSystemsCodeInNetAndBindFailedInTheServer) {
  bound_socket taken{true};
  auto again = net::tcp_listen("127.0.0.1", taken.port, 16);
  ASSERT_FALSE(again) << "bound the same port twice";
  EXPECT_EQ(again.error().code, std::errc::address_in_use) << again.error().code.message();
  auto where = "cannot listen on 127.0.0.1:" + std::to_string(taken.port) + ": ";
  EXPECT_EQ(again.error().text, where + "Address already in use");

  auto cfg = test::test_config();
  cfg.port = taken.port;
  server::server srv{cfg};
  auto started = srv.start();
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, server::errc::bind_failed);
  EXPECT_EQ(started.error().text, where + "Address already in use") << "the operator's text";
}

// listen.reuse-port: N nodes on one host share the client port (one per
// core, docs/cluster.md); the kernel spreads connections over them.
TEST(ServerStart, TwoServersWithReusePortShareTheClientPortAndBothGetAgents) {
  test::test_server a{[](server::server_config& c) {
    c.name = "node-a";
    c.listen_reuse_port = true;
  }};
  test::test_server b{[&](server::server_config& c) {
    c.name = "node-b";
    c.port = a.port();
    c.listen_reuse_port = true;
  }};
  ASSERT_EQ(b.port(), a.port());
  // Connections from distinct source ports hash to either socket: with 32
  // of them, all on one node has a chance of 2^-31.
  std::vector<test::raw_client> agents;
  int on_a = 0, on_b = 0;
  for (int i = 0; i < 32; ++i) {
    agents.emplace_back(a.port());
    auto welcome = agents.back().hello("agent-" + std::to_string(i));
    ASSERT_TRUE(welcome.has_welcome()) << welcome.DebugString();
    auto& server = welcome.welcome().server_name();
    ASSERT_TRUE(server == "node-a" || server == "node-b") << server;
    ++(server == "node-a" ? on_a : on_b);
  }
  EXPECT_GT(on_a, 0);
  EXPECT_GT(on_b, 0);
  EXPECT_TRUE(test::eventually([&] { return a.stats().agents + b.stats().agents == 32; }));
  EXPECT_EQ(a.stats().agents, static_cast<uint64_t>(on_a));
  // One node stopped: the other keeps the port and takes every agent.
  b.stop();
  for (int i = 0; i < 8; ++i) {
    test::raw_client late{a.port()};
    auto welcome = late.hello("late-" + std::to_string(i));
    ASSERT_TRUE(welcome.has_welcome()) << welcome.DebugString();
    EXPECT_EQ(welcome.welcome().server_name(), "node-a");
  }
}

TEST(ServerStart, AServerWithoutReusePortCannotShareThePortEitherWay) {
  auto where = [](uint16_t port) {
    return "cannot listen on 127.0.0.1:" + std::to_string(port) + ": Address already in use";
  };
  {
    test::test_server sharing{[](server::server_config& c) { c.listen_reuse_port = true; }};
    auto cfg = test::test_config();
    cfg.port = sharing.port(); // reuse-port off
    server::server srv{cfg};
    auto started = srv.start();
    ASSERT_FALSE(started) << "bound a port shared with SO_REUSEPORT without it";
    EXPECT_EQ(started.error().code, server::errc::bind_failed);
    EXPECT_EQ(started.error().text, where(sharing.port()));
  }
  {
    test::test_server alone; // reuse-port off
    auto cfg = test::test_config();
    cfg.port = alone.port();
    cfg.listen_reuse_port = true;
    server::server srv{cfg};
    auto started = srv.start();
    ASSERT_FALSE(started) << "joined a port whose first owner did not set SO_REUSEPORT";
    EXPECT_EQ(started.error().code, server::errc::bind_failed);
    EXPECT_EQ(started.error().text, where(alone.port()));
  }
}

TEST(ServerStart, AnUnresolvableHostIsAResolverCodeInNetAndResolveFailedInTheServer) {
  auto checked = net::check_resolvable(unresolvable);
  ASSERT_FALSE(checked);
  EXPECT_EQ(checked.error().code.category(), net::resolver_category())
    << checked.error().code.message();
  EXPECT_EQ(checked.error().text.rfind("cannot resolve: ", 0), 0u) << checked.error().text;

  auto listened = net::tcp_listen(unresolvable, 0, 16);
  ASSERT_FALSE(listened);
  EXPECT_EQ(listened.error().code.category(), net::resolver_category());
  EXPECT_EQ(listened.error().text.rfind("cannot listen on no-such-host.invalid:0: cannot "
                                        "resolve 'no-such-host.invalid': ",
                                        0),
            0u)
    << listened.error().text;

  auto connected = net::tcp_connect(unresolvable, 7420, 1s);
  ASSERT_FALSE(connected);
  EXPECT_EQ(connected.error().code.category(), net::resolver_category());

  auto cfg = test::test_config();
  cfg.host = unresolvable;
  cfg.allow_anonymous = cfg.allow_plaintext = true; // not loopback: past secure-by-default
  auto problems = server::check_paths(cfg);         // what --check-config reports (exit 78)
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].code, server::errc::resolve_failed);
  EXPECT_EQ(problems[0].text.rfind("listen.host 'no-such-host.invalid': cannot resolve: ", 0), 0u)
    << problems[0].text;
  server::server srv{cfg};
  auto started = srv.start();
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, server::errc::resolve_failed) << started.error().text;
}

TEST(ServerStart, ARefusedConnectionIsTheSystemsCode) {
  bound_socket not_listening{false}; // the kernel answers SYN with RST
  auto connected = net::tcp_connect("127.0.0.1", not_listening.port, 2s);
  ASSERT_FALSE(connected);
  EXPECT_EQ(connected.error().code, std::errc::connection_refused);
  EXPECT_EQ(connected.error().text,
            "cannot connect to 127.0.0.1:" + std::to_string(not_listening.port)
              + ": Connection refused");
}

TEST(ServerStart, AnUnwritableTraceFileAndASecondStartHaveCodes) {
  auto cfg = test::test_config();
  cfg.trace_enabled = true;
  cfg.trace_file = "/dev/null/trace.log";
  server::server broken{cfg};
  auto started = broken.start();
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, server::errc::unwritable_file);
  EXPECT_NE(started.error().text.find("cannot open trace file '/dev/null/trace.log'"),
            std::string::npos)
    << started.error().text;

  test::test_server running;
  auto twice = running.get().start();
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, server::errc::already_started);
}

TEST(ServerStart, AnInvalidConfigurationKeepsTheCodeOfItsFirstProblem) {
  auto cfg = test::test_config();
  cfg.idle_timeout = 1s;
  cfg.heartbeat_interval = 2s;
  server::server srv{cfg};
  auto started = srv.start();
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, server::errc::invalid_config);
  EXPECT_EQ(started.error().text.rfind("invalid configuration: timeouts.heartbeat-interval", 0), 0u)
    << started.error().text;
}

TEST(ServerStart, ClusterTlsFilesAreCopiedAndCheckedAndProblemsNameTheOperatorsPaths) {
  test::test_certs certs;
  auto cfg = test::test_config();
  cfg.cluster_name = "prod";
  cfg.cluster_listen = "127.0.0.1:0";
  cfg.cluster_tls_cert = certs.server.cert;
  cfg.cluster_tls_key = certs.client.key; // not the certificate's
  cfg.cluster_tls_ca = certs.ca;
  {
    server::server srv{cfg};
    auto started = srv.start();
    ASSERT_FALSE(started);
    EXPECT_EQ(started.error().code, server::errc::invalid_value);
    EXPECT_EQ(started.error().text.rfind("[cluster]: key file '" + certs.client.key + "'", 0), 0u)
      << started.error().text;
  }
  cfg.cluster_tls_key = certs.server.key;
  cfg.cluster_tls_ca = certs.other_ca; // the certificate is not of this CA
  {
    server::server srv{cfg};
    auto started = srv.start();
    ASSERT_FALSE(started);
    EXPECT_NE(started.error().text.find("certificate '" + certs.server.cert
                                        + "' does not verify against '" + certs.other_ca + "'"),
              std::string::npos)
      << started.error().text;
  }
  cfg.cluster_tls_ca = certs.ca;
  server::server srv{cfg};
  ASSERT_TRUE(srv.start());
  EXPECT_NE(srv.cluster_port(), 0);
  // CAF reads its files for every cluster connection: they are copies, so
  // the originals may go away (CAF would throw on its I/O thread).
  std::filesystem::remove(certs.server.key);
  std::filesystem::remove(certs.server.cert);
  test::tls_client node{srv.cluster_port(), {certs.ca, certs.client.cert, certs.client.key}};
  EXPECT_TRUE(node.ok()) << node.error();
  srv.shutdown();
  srv.wait();
}
