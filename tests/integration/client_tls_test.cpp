// The SDK over TLS (tls:// addresses) against an in-process server with
// certificates made at test time: agents and blocking_client, mutual TLS,
// and the failures a user must be able to read (untrusted server, wrong
// host name, expired client certificate).

#include <gtest/gtest.h>

#include <algorithm>

#include "convoke/client/blocking_client.hpp"
#include "test_agent.hpp"
#include "test_certs.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

class ClientTls : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    certs_ = new test_certs;
  }
  static void TearDownTestSuite() {
    delete certs_;
  }

  static server::server_config tls_config(const cert_files& own,
                                          tls::client_verification verify = {}) {
    auto cfg = test_config();
    cfg.tls_cert = own.cert;
    cfg.tls_key = own.key;
    if (verify != tls::client_verification::off) {
      cfg.tls_client_ca = certs_->ca;
      cfg.tls_verify_clients = verify;
    }
    return cfg;
  }

  /// Options for tls://host:port trusting `ca`, with `own` as client
  /// certificate if given.
  static client_options tls_options(uint16_t port, const std::string& ca,
                                    const cert_files* own = nullptr,
                                    const std::string& host = "127.0.0.1") {
    auto opts = local_options(port);
    EXPECT_TRUE(set_server_address(opts, "tls://" + host + ":" + std::to_string(port)));
    EXPECT_TRUE(opts.tls);
    opts.tls_ca_file = ca;
    if (own != nullptr) {
      opts.tls_cert_file = own->cert;
      opts.tls_key_file = own->key;
    }
    return opts;
  }

  static test_certs* certs_;
};

test_certs* ClientTls::certs_ = nullptr;

} // namespace

TEST_F(ClientTls, AddressSchemesChooseTls) {
  client_options o;
  ASSERT_TRUE(set_server_address(o, "tls://example.org:7421"));
  EXPECT_TRUE(o.tls);
  EXPECT_EQ(o.host, "example.org");
  EXPECT_EQ(o.port, 7421);
  ASSERT_TRUE(set_server_address(o, "tcp://[::1]:7000"));
  EXPECT_FALSE(o.tls);
  EXPECT_EQ(o.host, "::1");
  ASSERT_TRUE(set_server_address(o, "tls://h:1"));
  ASSERT_TRUE(set_server_address(o, "h:2"));
  EXPECT_FALSE(o.tls) << "an address without a scheme is plaintext";
  EXPECT_FALSE(set_server_address(o, "udp://h:3"));
  EXPECT_FALSE(set_server_address(o, "tls://"));
}

TEST_F(ClientTls, AgentsExchangeMessagesOverTls) {
  test_server srv{tls_config(certs_->server)};
  event_log log;
  lambda_agent alice{"alice", &log};
  lambda_agent bob{"bob", &log};
  std::string big(300'000, 'b');
  bob.on_connected = [&](const session_info&) { log.add("bob up"); };
  alice.on_msg = [&](const message& m) {
    if (m.payload == "ping")
      alice.send_to(m.sender, big);
  };
  runtime rt;
  rt.start(alice, tls_options(srv.port(), certs_->ca));
  rt.start(bob, tls_options(srv.port(), certs_->ca, nullptr, "localhost"));
  ASSERT_TRUE(log.wait_for("bob up"));
  ASSERT_TRUE(log.wait(
    [](auto& evs) { return std::count(evs.begin(), evs.end(), std::string{"connect"}) == 2; }));
  ASSERT_FALSE(bob.send_to("alice", "ping"));
  ASSERT_TRUE(log.wait_for("message:" + big));
  rt.stop_all();
  rt.wait();
  EXPECT_EQ(srv.stats().tls_failures, 0u);
}

TEST_F(ClientTls, BlockingClientsWithMutualTls) {
  test_server srv{tls_config(certs_->server, tls::client_verification::require)};
  blocking_client a{tls_options(srv.port(), certs_->ca, &certs_->client), "a"};
  blocking_client b{tls_options(srv.port(), certs_->ca, &certs_->client), "b"};
  std::string why;
  ASSERT_FALSE(a.connect(&why)) << why;
  ASSERT_FALSE(b.connect(&why)) << why;
  ASSERT_FALSE(a.send_to("b", "mutual"));
  auto m = b.receive(3s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, "mutual");
  EXPECT_EQ(srv.stats().tls_failures, 0u);
}

TEST_F(ClientTls, UntrustedServerIsRefusedAndTheErrorNamesTheVerifyFailure) {
  test_server srv{tls_config(certs_->other_server)};
  blocking_client c{tls_options(srv.port(), certs_->ca), "c"};
  std::string why;
  EXPECT_EQ(c.connect(&why), errc::not_connected);
  EXPECT_NE(why.find("certificate verify failed: unable to get local issuer certificate"),
            std::string::npos)
    << why;
  // An agent reports it in on_disconnect.
  event_log log;
  lambda_agent a{"a", &log};
  a.on_disconnected = [&](const disconnect_info& d) { log.add("reason:" + d.reason); };
  runtime rt;
  auto opts = tls_options(srv.port(), certs_->ca);
  opts.reconnect.enabled = false;
  rt.start(a, opts);
  EXPECT_TRUE(log.wait([](const std::vector<std::string>& evs) {
    return std::any_of(evs.begin(), evs.end(), [](const std::string& e) {
      return e.rfind("reason:", 0) == 0 && e.find("certificate verify failed") != std::string::npos;
    });
  }))
    << ::testing::PrintToString(log.snapshot());
  rt.stop_all();
  rt.wait();
}

TEST_F(ClientTls, WrongHostnameIsRefusedUnlessTheServerNameIsOverridden) {
  test_server srv{tls_config(certs_->wrong_host)}; // a certificate for elsewhere.example
  blocking_client c{tls_options(srv.port(), certs_->ca, nullptr, "localhost"), "c"};
  std::string why;
  EXPECT_EQ(c.connect(&why), errc::not_connected);
  EXPECT_NE(why.find("certificate verify failed: hostname mismatch"), std::string::npos) << why;
  auto by_ip = tls_options(srv.port(), certs_->ca);
  blocking_client ip{by_ip, "ip"};
  EXPECT_EQ(ip.connect(&why), errc::not_connected);
  EXPECT_NE(why.find("certificate verify failed: IP address mismatch"), std::string::npos) << why;
  auto overridden = tls_options(srv.port(), certs_->ca, nullptr, "localhost");
  overridden.tls_server_name = "elsewhere.example";
  blocking_client ok{overridden, "ok"};
  EXPECT_FALSE(ok.connect(&why)) << why;
}

TEST_F(ClientTls, ExpiredClientCertificateGetsAClearError) {
  test_server srv{tls_config(certs_->server, tls::client_verification::require)};
  blocking_client c{tls_options(srv.port(), certs_->ca, &certs_->expired), "old"};
  std::string why;
  EXPECT_EQ(c.connect(&why), errc::not_connected);
  EXPECT_NE(why.find("certificate expired"), std::string::npos) << why;
  EXPECT_TRUE(eventually([&] { return srv.stats().tls_failures == 1; }));
}

TEST_F(ClientTls, PlaintextClientToATlsServerReadsTlsRequired) {
  test_server srv{tls_config(certs_->server)};
  blocking_client c{local_options(srv.port()), "plain"};
  std::string why;
  EXPECT_EQ(c.connect(&why), errc::refused);
  EXPECT_NE(why.find("tls_required"), std::string::npos) << why;
}

TEST_F(ClientTls, UnusableTlsFilesAreReportedBeforeConnecting) {
  test_server srv{tls_config(certs_->server)};
  auto opts = tls_options(srv.port(), "/nonexistent/ca.pem");
  blocking_client c{opts, "c"};
  std::string why;
  EXPECT_EQ(c.connect(&why), errc::invalid_argument);
  EXPECT_NE(why.find("/nonexistent/ca.pem"), std::string::npos) << why;
  EXPECT_EQ(srv.stats().connections_total, 0u);
}
