// convoke::tls: two channels pumping bytes into each other in memory, with
// certificates made at test time (tests/support/test_certs.hpp).

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "convoke/tls/tls.hpp"
#include "test_certs.hpp"

namespace convoke::tls {
namespace {

using test::test_certs;

/// A client and a server channel connected back to back.
struct pair_of_channels {
  channel client;
  channel server;
  std::string client_got;
  std::string server_got;
  std::optional<error> client_error;
  std::optional<error> server_error;

  pair_of_channels(context_ptr c, context_ptr s) : client(std::move(c)), server(std::move(s)) {
    client.start();
  }

  /// Moves bytes both ways until neither side has anything to send.
  void pump() {
    for (int round = 0; round < 50; ++round) {
      std::vector<char> wire;
      bool moved = false;
      if (client.take_output(wire) > 0) {
        moved = true;
        std::vector<char> plain;
        if (auto ok = server.feed(wire.data(), wire.size(), plain); !ok && !server_error)
          server_error = ok.error();
        server_got.append(plain.begin(), plain.end());
      }
      wire.clear();
      if (server.take_output(wire) > 0) {
        moved = true;
        std::vector<char> plain;
        if (auto ok = client.feed(wire.data(), wire.size(), plain); !ok && !client_error)
          client_error = ok.error();
        client_got.append(plain.begin(), plain.end());
      }
      if (!moved)
        return;
    }
  }
};

context_ptr server_ctx(const test_certs& certs,
                       client_verification verify = client_verification::off) {
  auto c = context::server({certs.server.cert, certs.server.key, certs.ca, verify});
  EXPECT_TRUE(c) << c.error().message();
  return *c;
}

context_ptr client_ctx(const std::string& ca, const std::string& name = "localhost",
                       const test::cert_files* own = nullptr) {
  client_settings s;
  s.ca_file = ca;
  s.server_name = name;
  if (own != nullptr) {
    s.cert_file = own->cert;
    s.key_file = own->key;
  }
  auto c = context::client(s);
  EXPECT_TRUE(c) << c.error().message();
  return *c;
}

class Tls : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    certs_ = new test_certs;
  }
  static void TearDownTestSuite() {
    delete certs_;
  }
  static test_certs* certs_;
};

test_certs* Tls::certs_ = nullptr;

TEST_F(Tls, HandshakeThenDataBothWaysAndWritesBeforeTheHandshakeWait) {
  pair_of_channels p{client_ctx(certs_->ca), server_ctx(*certs_)};
  p.client.write("hello", 5); // before the handshake: waits in the channel
  EXPECT_EQ(p.client.buffered(), 5u);
  p.pump();
  ASSERT_FALSE(p.client_error) << p.client_error->text;
  ASSERT_FALSE(p.server_error) << p.server_error->text;
  EXPECT_TRUE(p.client.handshake_done());
  EXPECT_TRUE(p.server.handshake_done());
  EXPECT_EQ(p.server_got, "hello");
  EXPECT_EQ(p.server.peer_name(), ""); // no client certificate
  EXPECT_EQ(p.client.peer_name(), "localhost");
  std::string big(200'000, 'x');
  p.server.write(big.data(), big.size());
  p.pump();
  EXPECT_EQ(p.client_got, big);
  EXPECT_NE(p.client.description().find("TLSv1."), std::string::npos);
}

TEST_F(Tls, IpAddressIsVerifiedAgainstIpSans) {
  pair_of_channels p{client_ctx(certs_->ca, "127.0.0.1"), server_ctx(*certs_)};
  p.pump();
  ASSERT_FALSE(p.client_error) << p.client_error->text;
  EXPECT_TRUE(p.client.handshake_done());
}

TEST_F(Tls, CloseNotifyReachesThePeer) {
  pair_of_channels p{client_ctx(certs_->ca), server_ctx(*certs_)};
  p.pump();
  p.server.write("last", 4);
  p.server.close();
  p.server.write("never", 5); // after close: discarded
  p.pump();
  EXPECT_EQ(p.client_got, "last");
  EXPECT_TRUE(p.client.peer_closed());
}

TEST_F(Tls, MutualTlsGivesThePeerName) {
  pair_of_channels p{client_ctx(certs_->ca, "localhost", &certs_->client),
                     server_ctx(*certs_, client_verification::require)};
  p.pump();
  ASSERT_FALSE(p.server_error) << p.server_error->text;
  EXPECT_TRUE(p.server.handshake_done());
  EXPECT_EQ(p.server.peer_name(), "agent-a");
}

TEST_F(Tls, UntrustedServerIsRefusedWithTheVerifyReason) {
  pair_of_channels p{client_ctx(certs_->other_ca), server_ctx(*certs_)};
  p.pump();
  ASSERT_TRUE(p.client_error);
  EXPECT_EQ(p.client_error->code, make_error_code(errc::verify_failed));
  EXPECT_EQ(p.client_error->text,
            "certificate verify failed: unable to get local issuer certificate");
  EXPECT_FALSE(p.client.handshake_done());
  EXPECT_TRUE(p.server_error); // the client's alert
}

TEST_F(Tls, WrongHostnameIsRefused) {
  pair_of_channels p{client_ctx(certs_->ca, "elsewhere.example"), server_ctx(*certs_)};
  p.pump();
  ASSERT_TRUE(p.client_error);
  EXPECT_EQ(p.client_error->text, "certificate verify failed: hostname mismatch");
}

TEST_F(Tls, ExpiredClientCertificateIsRefusedByTheServer) {
  pair_of_channels p{client_ctx(certs_->ca, "localhost", &certs_->expired),
                     server_ctx(*certs_, client_verification::require)};
  p.pump();
  ASSERT_TRUE(p.server_error);
  EXPECT_EQ(p.server_error->code, make_error_code(errc::verify_failed));
  EXPECT_EQ(p.server_error->text, "certificate verify failed: certificate has expired");
  ASSERT_TRUE(p.client_error); // the server's alert
  EXPECT_NE(p.client_error->text.find("certificate expired"), std::string::npos)
    << p.client_error->text;
  EXPECT_FALSE(p.server.handshake_done());
}

TEST_F(Tls, ClientCertificateFromAnotherCaIsRefused) {
  auto foreign = certs_->issue("foreign-client", "intruder", {}, {}, true);
  pair_of_channels p{client_ctx(certs_->ca, "localhost", &foreign),
                     server_ctx(*certs_, client_verification::optional)};
  p.pump();
  ASSERT_TRUE(p.server_error);
  EXPECT_EQ(p.server_error->code, make_error_code(errc::verify_failed));
  EXPECT_EQ(p.server.peer_name(), "");
}

TEST_F(Tls, MissingClientCertificateIsRefusedWhenRequired) {
  pair_of_channels p{client_ctx(certs_->ca), server_ctx(*certs_, client_verification::require)};
  p.pump();
  ASSERT_TRUE(p.server_error);
  EXPECT_EQ(p.server_error->code, make_error_code(errc::verify_failed));
  EXPECT_NE(p.server_error->text.find("peer did not return a certificate"), std::string::npos)
    << p.server_error->text;
}

TEST_F(Tls, OptionalClientCertificateMayBeAbsent) {
  pair_of_channels p{client_ctx(certs_->ca), server_ctx(*certs_, client_verification::optional)};
  p.client.write("hi", 2);
  p.pump();
  ASSERT_FALSE(p.server_error) << p.server_error->text;
  EXPECT_EQ(p.server_got, "hi");
  EXPECT_EQ(p.server.peer_name(), "");
}

TEST_F(Tls, GarbageFailsTheChannel) {
  channel server{server_ctx(*certs_)};
  std::vector<char> plain;
  // A handshake record holding a ClientHello of two bytes: undecodable.
  std::string garbage{"\x16\x03\x01\x00\x06\x01\x00\x00\x02\xff\xff", 11};
  auto ok = server.feed(garbage.data(), garbage.size(), plain);
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, make_error_code(errc::handshake_failed));
  EXPECT_FALSE(ok.error().text.empty());
  EXPECT_TRUE(server.failed());
  EXPECT_TRUE(plain.empty());
}

TEST_F(Tls, GarbageAfterTheHandshakeIsAProtocolError) {
  pair_of_channels p{client_ctx(certs_->ca), server_ctx(*certs_)};
  p.pump();
  std::vector<char> plain;
  std::string garbage = "\x17\x03\x03\x00\x10" + std::string(16, 'z');
  auto ok = p.server.feed(garbage.data(), garbage.size(), plain);
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, make_error_code(errc::protocol_error));
}

TEST_F(Tls, OnlyAHandshakeRecordStartsTls) {
  EXPECT_TRUE(starts_handshake(0x16));
  EXPECT_FALSE(starts_handshake(0x00)); // a Convoke length prefix
  EXPECT_FALSE(starts_handshake('G'));
}

TEST_F(Tls, BadFilesAreNamed) {
  auto missing = context::server({"/nonexistent/cert.pem", certs_->server.key, "", {}});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, make_error_code(errc::bad_file));
  EXPECT_NE(missing.error().text.find("/nonexistent/cert.pem"), std::string::npos);
  auto mismatch = context::server({certs_->server.cert, certs_->client.key, "", {}});
  ASSERT_FALSE(mismatch);
  EXPECT_NE(mismatch.error().text.find("mismatch"), std::string::npos) << mismatch.error().text;
  auto no_ca
    = context::server({certs_->server.cert, certs_->server.key, "", client_verification::require});
  ASSERT_FALSE(no_ca);
  auto garbage_path = (certs_->dir / "garbage.pem").string();
  test::write_text(garbage_path, "not a certificate\n");
  auto garbage = context::server({garbage_path, certs_->server.key, "", {}});
  ASSERT_FALSE(garbage);
  EXPECT_NE(garbage.error().text.find(garbage_path), std::string::npos);
}

} // namespace
} // namespace convoke::tls
