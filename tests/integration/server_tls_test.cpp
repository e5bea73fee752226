// TLS on the server's sockets (tls.cert set), with real sockets and
// certificates made at test time. The clients are OpenSSL's own socket
// clients (tls_client), not convoke::tls, and plain raw_clients for what a
// TLS port must refuse.

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "convoke/common/net.hpp"
#include "convoke/proto/codec.hpp"
#include "raw_client.hpp"
#include "test_certs.hpp"
#include "test_server.hpp"
#include "tls_client.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;

namespace {

class ServerTls : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    certs_ = new test_certs;
  }
  static void TearDownTestSuite() {
    delete certs_;
  }

  static server::server_config tls_config(tls::client_verification verify
                                          = tls::client_verification::off) {
    auto cfg = test_config();
    cfg.tls_cert = certs_->server.cert;
    cfg.tls_key = certs_->server.key;
    if (verify != tls::client_verification::off) {
      cfg.tls_client_ca = certs_->ca;
      cfg.tls_verify_clients = verify;
    }
    return cfg;
  }

  static tls_client_options trusting(const std::string& ca, const cert_files* own = nullptr) {
    tls_client_options o;
    o.ca = ca;
    if (own != nullptr) {
      o.cert = own->cert;
      o.key = own->key;
    }
    return o;
  }

  static test_certs* certs_;
};

test_certs* ServerTls::certs_ = nullptr;

/// Checks that a message from `from` reaches `to` (both TLS, past Hello).
void expect_relay(tls_client& from, tls_client& to, const std::string& to_name,
                  const std::string& payload) {
  ASSERT_TRUE(from.send_envelope(to_name, payload)) << from.error();
  auto d = to.read_kind(v1::Frame::kDelivery);
  ASSERT_TRUE(d.has_value()) << to.error();
  EXPECT_EQ(d->delivery().envelope().payload(), payload);
}

} // namespace

TEST_F(ServerTls, AgentsExchangeMessagesOverTls) {
  test_server srv{tls_config()};
  tls_client a{srv.port(), trusting(certs_->ca)};
  tls_client b{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(a.ok()) << a.error();
  ASSERT_TRUE(b.ok()) << b.error();
  auto wa = a.hello("alice");
  auto wb = b.hello("bob");
  ASSERT_TRUE(wa && wa->has_welcome()) << a.error();
  ASSERT_TRUE(wb && wb->has_welcome()) << b.error();
  expect_relay(a, b, "bob", "over tls");
  // A large message: many TLS records, some of it through CAF's buffer.
  expect_relay(b, a, "alice", std::string(600'000, 'x'));
  EXPECT_EQ(srv.stats().tls_failures, 0u);
}

TEST_F(ServerTls, ShutdownSendsGoodbyeThenCloseNotify) {
  test_server srv{tls_config()};
  tls_client a{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(a.ok()) << a.error();
  ASSERT_TRUE(a.hello("alice").has_value());
  srv.get().shutdown();
  std::vector<v1::Frame> before;
  ASSERT_TRUE(a.wait_closed(5s, &before)) << a.error();
  ASSERT_FALSE(before.empty());
  EXPECT_TRUE(before.back().has_goodbye()) << before.back().ShortDebugString();
  EXPECT_TRUE(a.got_close_notify()) << "the session's close must flush the channel: " << a.error();
  srv.get().wait();
}

TEST_F(ServerTls, MutualTlsAcceptsAClientCertificateFromTheCa) {
  test_server srv{tls_config(tls::client_verification::require)};
  tls_client a{srv.port(), trusting(certs_->ca, &certs_->client)};
  ASSERT_TRUE(a.ok()) << a.error();
  auto w = a.hello("agent-a");
  ASSERT_TRUE(w && w->has_welcome()) << a.error();
  EXPECT_EQ(srv.stats().tls_failures, 0u);
}

TEST_F(ServerTls, ExpiredClientCertificateIsRefusedWithAClearError) {
  test_server srv{tls_config(tls::client_verification::require)};
  tls_client old{srv.port(), trusting(certs_->ca, &certs_->expired)};
  // TLS 1.3: the client finishes its side first; the server's alert then
  // arrives instead of an answer to Hello.
  if (old.ok()) {
    EXPECT_FALSE(old.hello("agent-old").has_value());
  }
  EXPECT_NE(old.error().find("certificate expired"), std::string::npos) << old.error();
  EXPECT_TRUE(eventually([&] { return srv.stats().tls_failures == 1; }));
  EXPECT_EQ(srv.stats().agents, 0u);
  // Others are unaffected.
  tls_client good{srv.port(), trusting(certs_->ca, &certs_->client)};
  ASSERT_TRUE(good.ok()) << good.error();
  EXPECT_TRUE(good.hello("agent-a").has_value()) << good.error();
}

TEST_F(ServerTls, ClientWithoutCertificateIsRefusedWhenRequired) {
  test_server srv{tls_config(tls::client_verification::require)};
  tls_client anon{srv.port(), trusting(certs_->ca)};
  if (anon.ok()) {
    EXPECT_FALSE(anon.hello("anon").has_value());
  }
  EXPECT_NE(anon.error().find("certificate required"), std::string::npos) << anon.error();
  EXPECT_TRUE(eventually([&] { return srv.stats().tls_failures == 1; }));
}

TEST_F(ServerTls, ClientCertificateOfAnotherCaIsRefused) {
  test_server srv{tls_config(tls::client_verification::optional)};
  auto foreign = certs_->issue("intruder", "intruder", {}, {}, /*use_other_ca=*/true);
  tls_client c{srv.port(), trusting(certs_->ca, &foreign)};
  if (c.ok()) {
    EXPECT_FALSE(c.hello("intruder").has_value());
  }
  EXPECT_NE(c.error().find("unknown ca"), std::string::npos) << c.error();
  // optional: no certificate at all is fine.
  tls_client anon{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(anon.ok()) << anon.error();
  auto w = anon.hello("anon");
  EXPECT_TRUE(w && w->has_welcome()) << anon.error();
}

TEST_F(ServerTls, ClientRefusesAServerItDoesNotTrust) {
  test_server srv{tls_config()};
  tls_client c{srv.port(), trusting(certs_->other_ca)};
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.error().find("certificate verify failed"), std::string::npos) << c.error();
  // The server sees the client's alert and counts the failed handshake.
  EXPECT_TRUE(eventually([&] { return srv.stats().tls_failures == 1; }));
}

TEST_F(ServerTls, PlaintextGetsATlsRequiredNoticeInPlaintext) {
  test_server srv{tls_config()};
  raw_client plain{srv.port()};
  auto answer = plain.hello("plain");
  ASSERT_TRUE(answer.has_notice()) << answer.ShortDebugString();
  EXPECT_EQ(answer.notice().code(), "tls_required");
  EXPECT_EQ(answer.notice().severity(), v1::Notice::ERROR);
  EXPECT_TRUE(plain.wait_closed(3s));
  EXPECT_EQ(srv.stats().tls_failures, 1u);
  // An HTTP request is plaintext too.
  raw_client http{srv.port()};
  ASSERT_TRUE(http.send_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::vector<v1::Frame> before;
  EXPECT_TRUE(http.wait_closed(3s, &before));
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].notice().code(), "tls_required");
}

TEST_F(ServerTls, UnfinishedHandshakeIsClosedAtTheHandshakeTimeoutOthersUnaffected) {
  auto cfg = tls_config();
  cfg.handshake_timeout = std::chrono::milliseconds{400};
  test_server srv{cfg};
  // The start of a TLS record, then nothing.
  raw_client stuck{srv.port()};
  ASSERT_TRUE(stuck.send_bytes(std::string{"\x16\x03\x01\x02\x00\x01\x00\x01", 8}));
  auto started = std::chrono::steady_clock::now();
  // Meanwhile agents connect and relay.
  tls_client a{srv.port(), trusting(certs_->ca)};
  tls_client b{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(a.ok() && b.ok()) << a.error() << b.error();
  ASSERT_TRUE(a.hello("alice").has_value());
  ASSERT_TRUE(b.hello("bob").has_value());
  expect_relay(a, b, "bob", "unaffected");
  std::vector<v1::Frame> before;
  EXPECT_TRUE(stuck.wait_closed(5s, &before));
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, std::chrono::milliseconds{300});
  EXPECT_TRUE(before.empty()) << "nothing readable goes to a peer without a handshake";
  EXPECT_EQ(srv.stats().timeouts, 1u);
  EXPECT_EQ(srv.stats().tls_failures, 1u);
  expect_relay(b, a, "alice", "still unaffected");
}

TEST_F(ServerTls, TlsGarbageClosesOnlyThatSession) {
  // Garbage that OpenSSL cannot reject at once (a record announcing more
  // bytes) ends at the handshake timeout.
  auto cfg = tls_config();
  cfg.handshake_timeout = std::chrono::milliseconds{1000};
  test_server srv{cfg};
  tls_client a{srv.port(), trusting(certs_->ca)};
  tls_client b{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(a.hello("alice").has_value());
  ASSERT_TRUE(b.hello("bob").has_value());
  std::mt19937 rng{42};
  for (int i = 0; i < 5; ++i) {
    // A handshake record type, then random bytes.
    std::string garbage(4096, '\0');
    for (auto& c : garbage)
      c = static_cast<char>(rng());
    garbage[0] = 0x16;
    raw_client g{srv.port()};
    ASSERT_TRUE(g.send_bytes(garbage));
    std::vector<v1::Frame> frames;
    EXPECT_TRUE(g.wait_closed(5s, &frames)) << "garbage " << i;
    EXPECT_TRUE(frames.empty());
  }
  EXPECT_TRUE(eventually([&] { return srv.stats().tls_failures == 5; }));
  // Garbage inside an established TLS connection: a record that does not
  // decrypt, written around OpenSSL.
  tls_client c{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(c.hello("carol").has_value());
  std::string bad_record{"\x17\x03\x03\x00\x20", 5};
  bad_record.append(32, 'z');
  ASSERT_TRUE(net::write_all(c.fd(), bad_record.data(), bad_record.size()));
  EXPECT_TRUE(c.wait_closed(3s));
  EXPECT_TRUE(eventually([&] { return srv.stats().tls_failures == 6; }));
  expect_relay(a, b, "bob", "after the garbage");
  EXPECT_TRUE(eventually([&] { return srv.stats().agents == 2; }));
}

TEST_F(ServerTls, ReloadServesTheNewCertificateToNewConnectionsOnly) {
  // The server's files live in a copy that the test replaces, as an
  // operator would.
  auto cert = (certs_->dir / "live.crt").string();
  auto key = (certs_->dir / "live.key").string();
  replace_file(certs_->server.cert, cert);
  replace_file(certs_->server.key, key);
  auto cfg = test_config();
  cfg.tls_cert = cert;
  cfg.tls_key = key;
  test_server srv{cfg};
  tls_client before{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(before.ok()) << before.error();
  ASSERT_TRUE(before.hello("before").has_value());

  replace_file(certs_->other_server.cert, cert);
  replace_file(certs_->other_server.key, key);
  auto r = srv.get().reload_tls();
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_NE(r->find("subject="), std::string::npos) << *r;
  tls_client old_trust{srv.port(), trusting(certs_->ca)};
  EXPECT_FALSE(old_trust.ok());
  EXPECT_NE(old_trust.error().find("certificate verify failed"), std::string::npos)
    << old_trust.error();
  tls_client new_trust{srv.port(), trusting(certs_->other_ca)};
  ASSERT_TRUE(new_trust.ok()) << new_trust.error();
  ASSERT_TRUE(new_trust.hello("after").has_value());
  // The existing session kept its TLS connection.
  expect_relay(new_trust, before, "before", "across the reload");

  // A bad file: the reload fails and names it; the previous context stays.
  write_text(cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
  auto bad = srv.get().reload_tls();
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().text.find(cert), std::string::npos) << bad.error().text;
  tls_client still{srv.port(), trusting(certs_->other_ca)};
  EXPECT_TRUE(still.ok()) << still.error();
}

TEST_F(ServerTls, ReloadWithoutTlsIsAnError) {
  test_server srv;
  auto r = srv.get().reload_tls();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().text.find("TLS is off"), std::string::npos);
}

TEST_F(ServerTls, DropPolicyDropsBeforeEncryptingSoTheStreamStaysIntact) {
  // Under TLS the backlog is ciphertext, which cannot be cut at frame
  // boundaries: messages are dropped before they are encrypted, and the
  // stalled reader later decrypts everything that was queued for it.
  auto cfg = tls_config();
  cfg.max_frame_bytes = 16 * 1024;
  cfg.output_high_water = 256 * 1024;
  cfg.slow_consumer = server::slow_consumer_policy::drop;
  test_server srv{cfg};
  tls_client slow{srv.port(), trusting(certs_->ca)};
  tls_client fast{srv.port(), trusting(certs_->ca)};
  tls_client pub{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(slow.hello("stalled").has_value());
  ASSERT_TRUE(fast.hello("fast").has_value());
  ASSERT_TRUE(pub.hello("pub").has_value());
  constexpr int n = 20000; // ~20 MB: far above kernel buffers + the mark
  std::atomic<int> progress{0};
  {
    std::jthread sender{[&] {
      std::string burst;
      for (int i = 0; i < n;) {
        while (i - progress.load() > 128)
          std::this_thread::yield();
        burst.clear();
        for (int k = 0; k < 32 && i < n; ++k, ++i) {
          v1::Frame f;
          f.mutable_envelope()->set_client_seq(static_cast<uint64_t>(i));
          f.mutable_envelope()->set_payload(std::string(1000, 'p'));
          proto::append_frame(f, burst);
        }
        ASSERT_TRUE(pub.send_bytes(burst)) << pub.error();
      }
    }};
    for (int i = 0; i < n; ++i) {
      auto d = fast.read_kind(v1::Frame::kDelivery, 5s);
      ASSERT_TRUE(d.has_value()) << "fast consumer missed " << i << ": " << fast.error();
      ASSERT_EQ(d->delivery().envelope().client_seq(), static_cast<uint64_t>(i));
      progress = i + 1;
    }
  }
  auto dropped = srv.stats().dropped;
  EXPECT_GT(dropped, 0u);
  uint64_t received = 0;
  uint64_t next = 0;
  std::vector<v1::Notice> notices;
  while (auto f = slow.read(2s)) {
    if (f->has_notice()) {
      notices.push_back(f->notice());
      if (f->notice().code() == "messages_dropped")
        break;
    }
    if (!f->has_delivery())
      continue;
    EXPECT_GE(f->delivery().envelope().client_seq(), next) << "reordered";
    next = f->delivery().envelope().client_seq() + 1;
    ++received;
  }
  EXPECT_TRUE(slow.ok()) << "the TLS stream broke: " << slow.error();
  EXPECT_EQ(received + dropped, static_cast<uint64_t>(n));
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_EQ(notices[0].code(), "slow_consumer"); // behind the backlog under TLS
  EXPECT_EQ(notices[1].code(), "messages_dropped");
  EXPECT_EQ(notices[1].text().rfind(std::to_string(dropped) + " messages", 0), 0u)
    << notices[1].text();
  ASSERT_TRUE(pub.send_envelope("stalled", "after"));
  auto d = slow.read_kind(v1::Frame::kDelivery);
  ASSERT_TRUE(d.has_value()) << slow.error();
  EXPECT_EQ(d->delivery().envelope().payload(), "after");
  EXPECT_EQ(srv.stats().tls_failures, 0u);
}

TEST_F(ServerTls, SlowConsumerUnderTlsGetsItsBacklogThenTheNoticeAndEverythingIsCounted) {
  // Disconnect policy: the backlog (ciphertext) cannot be given up, so the
  // Notice comes after it, and the close waits for it (timeouts.drain).
  auto cfg = tls_config();
  cfg.max_frame_bytes = 16 * 1024;
  cfg.output_high_water = 256 * 1024;
  cfg.drain_timeout = std::chrono::seconds{10};
  test_server srv{cfg};
  tls_client slow{srv.port(), trusting(certs_->ca)};
  tls_client fast{srv.port(), trusting(certs_->ca)};
  tls_client pub{srv.port(), trusting(certs_->ca)};
  ASSERT_TRUE(slow.hello("stalled").has_value());
  ASSERT_TRUE(fast.hello("fast").has_value());
  ASSERT_TRUE(pub.hello("pub").has_value());
  constexpr int n = 20000;
  std::atomic<int> progress{0};
  {
    std::jthread sender{[&] {
      std::string burst;
      for (int i = 0; i < n;) {
        while (i - progress.load() > 128)
          std::this_thread::yield();
        burst.clear();
        for (int k = 0; k < 32 && i < n; ++k, ++i) {
          v1::Frame f;
          f.mutable_envelope()->set_client_seq(static_cast<uint64_t>(i));
          f.mutable_envelope()->set_payload(std::string(1000, 'p'));
          proto::append_frame(f, burst);
        }
        ASSERT_TRUE(pub.send_bytes(burst)) << pub.error();
      }
    }};
    for (int i = 0; i < n; ++i) {
      auto d = fast.read_kind(v1::Frame::kDelivery, 5s);
      ASSERT_TRUE(d.has_value()) << "fast consumer missed " << i << ": " << fast.error();
      progress = i + 1;
    }
  }
  EXPECT_EQ(srv.stats().slow_consumers, 1u);
  std::vector<v1::Frame> frames;
  ASSERT_TRUE(slow.wait_closed(10s, &frames)) << slow.error();
  EXPECT_TRUE(slow.got_close_notify()) << "a clean TLS close: " << slow.error();
  ASSERT_FALSE(frames.empty());
  EXPECT_TRUE(frames.back().has_notice() && frames.back().notice().code() == "slow_consumer")
    << frames.back().ShortDebugString();
  uint64_t received = 0;
  for (auto& f : frames)
    received += f.has_delivery();
  EXPECT_TRUE(eventually([&] { return srv.stats().connections_open == 2; }));
  auto queued_for_it = srv.stats().deliveries - static_cast<uint64_t>(n);
  EXPECT_GT(queued_for_it, received) << "it cannot have received everything";
  EXPECT_EQ(received + srv.stats().dropped, queued_for_it);
  EXPECT_EQ(srv.stats().tls_failures, 0u);
}
