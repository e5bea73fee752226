// Bad input and timeouts: the offender gets a precise Notice and is closed;
// everybody else keeps working.

#include <gtest/gtest.h>

#include "convoke/proto/codec.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"

using namespace convoke;
using namespace convoke::test;

namespace {

raw_client join(uint16_t port, const std::string& name) {
  raw_client c{port};
  auto w = c.hello(name);
  EXPECT_TRUE(w.has_welcome()) << w.ShortDebugString();
  return c;
}

std::string header(uint32_t len) {
  std::string h(4, '\0');
  proto::write_header(h.data(), len);
  return h;
}

/// A length-delimited field: tag, length, bytes (all short here).
std::string ld(int number, const std::string& bytes) {
  return std::string(1, static_cast<char>(number << 3 | 2))
         + std::string(1, static_cast<char>(bytes.size())) + bytes;
}

/// A framed Frame{envelope = `env`}.
std::string envelope_frame(const std::string& env) {
  auto body = ld(3, env);
  return header(static_cast<uint32_t>(body.size())) + body;
}

/// Expects an ERROR Notice with `code` and then the connection closing.
void expect_refused(raw_client& c, const std::string& code) {
  std::vector<v1::Frame> frames;
  ASSERT_TRUE(c.wait_closed(3s, &frames)) << "connection not closed";
  ASSERT_FALSE(frames.empty()) << "closed without a Notice";
  auto& last = frames.back();
  ASSERT_TRUE(last.has_notice()) << last.ShortDebugString();
  EXPECT_EQ(last.notice().code(), code) << last.notice().text();
  EXPECT_EQ(last.notice().severity(), v1::Notice::ERROR);
  EXPECT_FALSE(last.notice().text().empty());
}

/// Bystanders still talk to each other.
void expect_bystanders_fine(raw_client& a, raw_client& b, const std::string& text) {
  ASSERT_TRUE(a.send_envelope("bob", text));
  auto e = b.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), text);
}

struct bad_input_case {
  const char* name;
  std::string bytes;
  bool after_hello;
  const char* code;
};

void PrintTo(const bad_input_case& c, std::ostream* os) {
  *os << c.name;
}

class BadInput : public testing::TestWithParam<bad_input_case> {};

} // namespace

TEST_P(BadInput, GetsNoticeAndCloseWhileOthersKeepWorking) {
  test_server srv{[](auto& cfg) { cfg.max_frame_bytes = 4096; }};
  auto alice = join(srv.port(), "alice");
  auto bob = join(srv.port(), "bob");
  raw_client bad{srv.port()};
  if (GetParam().after_hello) {
    ASSERT_TRUE(bad.hello("mallory").has_welcome());
  }
  ASSERT_TRUE(bad.send_bytes(GetParam().bytes));
  expect_refused(bad, GetParam().code);
  expect_bystanders_fine(alice, bob, std::string{"after "} + GetParam().name);
  EXPECT_GE(srv.stats().protocol_errors, 1u);
}

INSTANTIATE_TEST_SUITE_P(
  Malformed, BadInput,
  testing::Values(
    bad_input_case{"zero_length", header(0), true, "frame_empty"},
    bad_input_case{"oversize", header(4097) + std::string(100, 'x'), true, "frame_too_large"},
    bad_input_case{"oversize_before_hello", header(1u << 30), false, "frame_too_large"},
    bad_input_case{"garbage", header(8) + std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8), true,
                   "frame_undecodable"},
    bad_input_case{"http_request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, "frame_too_large"},
    bad_input_case{"empty_frame_message", header(2) + std::string("\x00\x00", 2), true,
                   "frame_undecodable"},
    bad_input_case{"envelope_before_hello",
                   [] {
                     v1::Frame f;
                     f.mutable_envelope()->set_payload("hi");
                     return proto::encode_frame(f);
                   }(),
                   false, "hello_required"},
    bad_input_case{"second_hello",
                   [] {
                     v1::Frame f;
                     f.mutable_hello()->set_protocol_version(1);
                     return proto::encode_frame(f);
                   }(),
                   true, "duplicate_hello"},
    // The audit's "direct message turned broadcast": a recipient with another
    // wire type was taken for no recipient and relayed to everyone.
    bad_input_case{"recipient_as_varint",
                   envelope_frame(std::string("\x18\x05", 2) + ld(5, "leak")), true,
                   "frame_undecodable"},
    bad_input_case{"recipient_as_fixed32",
                   envelope_frame(std::string("\x1d\x01\x02\x03\x04", 5) + ld(5, "leak")), true,
                   "frame_undecodable"},
    bad_input_case{"route_as_varint_in_second_envelope_field",
                   [] {
                     auto body = ld(3, ld(3, "bob")) + ld(3, std::string("\x20\x01", 2));
                     return header(static_cast<uint32_t>(body.size())) + body;
                   }(),
                   true, "frame_undecodable"},
    bad_input_case{"payload_as_fixed32",
                   envelope_frame(ld(3, "bob") + std::string("\x2d\x01\x02\x03\x04", 5)), true,
                   "frame_undecodable"},
    bad_input_case{"unknown_group_field",
                   envelope_frame(ld(5, "x") + std::string("\xa3\x06\xa4\x06", 4)), true,
                   "frame_undecodable"},
    bad_input_case{"hello_name_as_varint",
                   [] {
                     auto hello = std::string("\x08\x01", 2) + std::string("\x10\x07", 2);
                     auto body = ld(1, hello);
                     return header(static_cast<uint32_t>(body.size())) + body;
                   }(),
                   false, "frame_undecodable"},
    bad_input_case{"subscribe_route_as_varint",
                   [] {
                     auto body = ld(5, std::string("\x08\x01", 2));
                     return header(static_cast<uint32_t>(body.size())) + body;
                   }(),
                   true, "frame_undecodable"},
    bad_input_case{"client_sends_welcome",
                   [] {
                     v1::Frame f;
                     f.mutable_welcome()->set_agent_name("x");
                     return proto::encode_frame(f);
                   }(),
                   true, "unexpected_frame"}),
  [](const testing::TestParamInfo<bad_input_case>& info) { return info.param.name; });

TEST(ServerProtocol, FrameSplitAcrossManyWritesIsReassembled) {
  test_server srv;
  auto bob = join(srv.port(), "bob");
  raw_client alice{srv.port()};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  v1::Frame f;
  f.mutable_envelope()->set_recipient("bob");
  f.mutable_envelope()->set_payload(std::string(3000, 'z'));
  auto bytes = proto::encode_frame(f);
  for (char c : bytes) // one byte per write
    ASSERT_TRUE(alice.send_bytes(std::string_view{&c, 1}));
  auto e = bob.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload().size(), 3000u);
}

TEST(ServerProtocol, UnsupportedVersionIsRefused) {
  test_server srv;
  raw_client c{srv.port()};
  v1::Frame f;
  f.mutable_hello()->set_protocol_version(7);
  f.mutable_hello()->set_agent_name("future");
  ASSERT_TRUE(c.send(f));
  expect_refused(c, "unsupported_version");
}

TEST(ServerProtocol, InvalidNameIsRefused) {
  test_server srv;
  raw_client c{srv.port()};
  auto r = c.hello("has space");
  ASSERT_TRUE(r.has_notice());
  EXPECT_EQ(r.notice().code(), "invalid_name");
  EXPECT_TRUE(c.wait_closed(2s));
}

TEST(ServerProtocol, TokenIsRequiredWhenConfigured) {
  test_server srv{[](auto& cfg) { cfg.token = "s3cret"; }};
  raw_client anonymous{srv.port()};
  auto r = anonymous.hello("alice");
  ASSERT_TRUE(r.has_notice());
  EXPECT_EQ(r.notice().code(), "auth_failed");
  raw_client good{srv.port()};
  v1::Frame f;
  f.mutable_hello()->set_protocol_version(1);
  f.mutable_hello()->set_agent_name("alice");
  f.mutable_hello()->set_token("s3cret");
  ASSERT_TRUE(good.send(f));
  auto w = good.read_kind(v1::Frame::kWelcome);
  ASSERT_TRUE(w.has_value());
}

TEST(ServerProtocol, HandshakeTimeoutClosesASilentConnection) {
  test_server srv{[](auto& cfg) { cfg.handshake_timeout = 300ms; }};
  raw_client silent{srv.port()};
  auto start = std::chrono::steady_clock::now();
  expect_refused(silent, "handshake_timeout");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 250ms);
  EXPECT_EQ(srv.stats().timeouts, 1u);
}

TEST(ServerProtocol, IdleTimeoutClosesASilentAgentButNotOneAnsweringHeartbeats) {
  test_server srv{[](auto& cfg) {
    cfg.heartbeat_interval = 100ms;
    cfg.idle_timeout = 400ms;
  }};
  auto silent = join(srv.port(), "silent");
  auto lively = join(srv.port(), "lively");
  // `lively` answers heartbeats (read_kind replies to them) for 1.2 s.
  auto until = std::chrono::steady_clock::now() + 1200ms;
  while (std::chrono::steady_clock::now() < until)
    lively.read_kind(v1::Frame::kEnvelope, 100ms);
  std::vector<v1::Frame> frames;
  ASSERT_TRUE(silent.wait_closed(100ms, &frames)); // closed long ago
  ASSERT_FALSE(frames.empty());
  EXPECT_GT(frames.front().heartbeat().seq(), 0u) << "heartbeats were sent first";
  ASSERT_TRUE(frames.back().has_notice());
  EXPECT_EQ(frames.back().notice().code(), "idle_timeout");
  EXPECT_TRUE(lively.ping());
}

TEST(ServerProtocol, ServerFullRefusesExtraConnections) {
  test_server srv{[](auto& cfg) { cfg.max_agents = 2; }};
  auto a = join(srv.port(), "alice");
  auto b = join(srv.port(), "bob");
  raw_client c{srv.port()};
  auto r = c.hello("carol"); // refused at Hello: only agents count
  ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "server_full");
  EXPECT_TRUE(c.wait_closed(3s));
  expect_bystanders_fine(a, b, "still two of us");
}

TEST(ServerProtocol, PeerVanishingMidFrameDoesNotDisturbOthers) {
  test_server srv;
  auto alice = join(srv.port(), "alice");
  auto bob = join(srv.port(), "bob");
  {
    raw_client quitter{srv.port()};
    ASSERT_TRUE(quitter.hello("quitter").has_welcome());
    ASSERT_TRUE(quitter.send_bytes(header(1000) + "partial"));
  } // closed mid-frame
  expect_bystanders_fine(alice, bob, "unaffected");
}

TEST(ServerProtocol, FramesBeforeWelcomeAreLimited) {
  test_server srv; // max-frame-bytes 1 MiB, but not before Welcome
  raw_client c{srv.port()};
  ASSERT_TRUE(c.send_bytes(header(100'000) + std::string(1000, 'x')));
  std::vector<v1::Frame> frames;
  ASSERT_TRUE(c.wait_closed(3s, &frames));
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().notice().code(), "frame_too_large");
  EXPECT_NE(frames.back().notice().text().find("before Welcome"), std::string::npos)
    << frames.back().notice().text();
  // After Welcome the configured limit applies.
  auto ok = join(srv.port(), "big-sender");
  auto rx = join(srv.port(), "bob");
  ASSERT_TRUE(ok.send_envelope("bob", std::string(200'000, 'b')));
  auto e = rx.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload().size(), 200'000u);
}

TEST(ServerProtocol, SlowlorisCannotHoldAConnectionWithAFrameThatNeverCompletes) {
  // The audit: one byte every 2 s kept a connection alive long past the idle
  // timeout, without ever answering a heartbeat. A started frame must now
  // complete within timeouts.frame, and only complete frames count as
  // activity.
  test_server srv{[](auto& cfg) {
    cfg.heartbeat_interval = 100ms;
    cfg.idle_timeout = 5s;
    cfg.frame_timeout = 500ms;
  }};
  auto loris = join(srv.port(), "loris");
  auto bystander = join(srv.port(), "bystander");
  std::string frame = header(1000) + std::string(1000, 'x');
  auto t0 = std::chrono::steady_clock::now();
  size_t sent = 0;
  bool closed = false;
  std::vector<v1::Frame> frames;
  // One byte every 50 ms: 1004 bytes would take 50 s.
  while (!closed && sent < frame.size() && std::chrono::steady_clock::now() - t0 < 4s) {
    if (!loris.send_bytes(frame.substr(sent++, 1)))
      break;
    closed = loris.wait_closed(50ms, &frames);
  }
  auto held = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(closed || loris.wait_closed(2s, &frames)) << "still connected after the deadline";
  EXPECT_LT(held, 2s);
  ASSERT_FALSE(frames.empty());
  ASSERT_TRUE(frames.back().has_notice());
  EXPECT_EQ(frames.back().notice().code(), "frame_timeout") << frames.back().notice().text();
  EXPECT_TRUE(bystander.ping());
}

TEST(ServerProtocol, TricklingBytesIsNotActivityButCompleteFramesAre) {
  // A client that trickles an endless frame never answers heartbeats: the
  // idle timeout closes it even when the frame deadline is generous.
  test_server srv{[](auto& cfg) {
    cfg.heartbeat_interval = 100ms;
    cfg.idle_timeout = 400ms;
    cfg.frame_timeout = 30s;
  }};
  auto loris = join(srv.port(), "loris");
  std::string frame = header(100000) + std::string(100000, 'x');
  std::vector<v1::Frame> frames;
  bool closed = false;
  auto t0 = std::chrono::steady_clock::now();
  for (size_t sent = 0; !closed && std::chrono::steady_clock::now() - t0 < 3s; ++sent) {
    if (!loris.send_bytes(frame.substr(sent, 1)))
      break;
    closed = loris.wait_closed(20ms, &frames);
  }
  ASSERT_TRUE(closed || loris.wait_closed(2s, &frames));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  ASSERT_FALSE(frames.empty());
  ASSERT_TRUE(frames.back().has_notice());
  EXPECT_EQ(frames.back().notice().code(), "idle_timeout");
}
