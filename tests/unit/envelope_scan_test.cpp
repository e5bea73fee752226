// The relay fast path must agree with protobuf: what it accepts, receivers
// parse to the same envelope plus the server's stamp; what it cannot vouch
// for, it leaves to the full parser.
#include <gtest/gtest.h>

#include <random>

#include "convoke/proto/codec.hpp"
#include "convoke/proto/wire_format.hpp"
#include "envelope_scan.hpp"

using namespace convoke;
using namespace convoke::server;

namespace {

std::string body_of(const v1::Frame& f) {
  return f.SerializeAsString();
}

/// What a receiver parses from the Delivery of `body` (a Frame{envelope}),
/// the stamp merged into the envelope for comparison.
v1::Envelope relayed(const std::string& body, uint64_t id, const std::string& sender, int64_t now) {
  envelope_view v;
  EXPECT_TRUE(scan_envelope_frame(body, v));
  std::vector<char> out;
  auto at = append_delivery_frame(out, v.envelope, id, sender, now);
  EXPECT_EQ(std::string_view(out.data() + at, v.envelope.size()), v.envelope);
  EXPECT_EQ(proto::read_header(out.data()), out.size() - proto::header_size);
  EXPECT_LE(out.size(), v.envelope.size() + delivery_overhead(sender.size()));
  v1::Frame f;
  EXPECT_EQ(proto::decode_frame({out.data() + 4, out.size() - 4}, f), proto::frame_error::none);
  EXPECT_TRUE(f.has_delivery());
  EXPECT_EQ(f.delivery().message_id(), id);
  EXPECT_EQ(f.delivery().sender(), sender);
  EXPECT_EQ(f.delivery().relayed_unix_nanos(), now);
  auto e = f.delivery().envelope();
  e.set_message_id(id);
  e.set_sender(sender);
  e.set_relayed_unix_nanos(now);
  return e;
}

} // namespace

TEST(EnvelopeScan, AgreesWithProtobufOnRandomEnvelopes) {
  std::mt19937_64 rng{7};
  auto text = [&](size_t max) {
    std::string s(rng() % (max + 1), 'a');
    for (auto& c : s)
      c = static_cast<char>('a' + rng() % 26);
    return s;
  };
  for (int i = 0; i < 2000; ++i) {
    v1::Frame f;
    auto e = f.mutable_envelope();
    if (rng() % 2)
      e->set_recipient(text(20));
    if (rng() % 2)
      e->set_route(text(30));
    std::string payload(rng() % 300, '\0');
    for (auto& c : payload)
      c = static_cast<char>(rng());
    e->set_payload(payload);
    if (rng() % 2)
      e->set_content_type("text/plain");
    if (rng() % 3 == 0)
      (*e->mutable_headers())[text(5)] = text(10);
    e->set_trace_id(std::string(16, static_cast<char>(rng())));
    e->set_sent_unix_nanos(static_cast<int64_t>(rng() >> 2));
    e->set_client_seq(rng() % 100000);
    e->set_request_id(rng() % 3 == 0 ? rng() : 0);
    e->set_in_reply_to(rng() % 5 == 0 ? rng() : 0);
    auto body = body_of(f);
    envelope_view v;
    ASSERT_TRUE(scan_envelope_frame(body, v));
    EXPECT_EQ(v.recipient, e->recipient());
    EXPECT_EQ(v.route, e->route());
    EXPECT_EQ(v.payload, e->payload());
    EXPECT_EQ(v.trace_id, e->trace_id());
    EXPECT_EQ(v.sent_ns, e->sent_unix_nanos());
    EXPECT_EQ(v.client_seq, e->client_seq());
    EXPECT_EQ(v.request_id, e->request_id());
    auto out = relayed(body, 1000 + static_cast<uint64_t>(i), "alice", 123456789);
    auto expected = *e;
    expected.set_message_id(1000 + static_cast<uint64_t>(i));
    expected.set_sender("alice");
    expected.set_relayed_unix_nanos(123456789);
    EXPECT_EQ(out.SerializeAsString(), expected.SerializeAsString()) << i;
  }
}

TEST(EnvelopeScan, ServerFieldsOverrideWhatTheSenderClaims) {
  v1::Frame f;
  f.mutable_envelope()->set_sender("mallory");
  f.mutable_envelope()->set_message_id(999);
  f.mutable_envelope()->set_relayed_unix_nanos(1);
  f.mutable_envelope()->set_payload("x");
  envelope_view v;
  ASSERT_TRUE(scan_envelope_frame(body_of(f), v));
  auto out = relayed(body_of(f), 5, "alice", 42);
  EXPECT_EQ(out.sender(), "alice");
  EXPECT_EQ(out.message_id(), 5u);
  EXPECT_EQ(out.relayed_unix_nanos(), 42);
}

TEST(EnvelopeScan, LeavesUnusualShapesToTheFullParser) {
  envelope_view v;
  // Not an envelope.
  v1::Frame hb;
  hb.mutable_heartbeat()->set_seq(1);
  EXPECT_FALSE(scan_envelope_frame(body_of(hb), v));
  // Two top-level fields (an envelope followed by another oneof member).
  v1::Frame env;
  env.mutable_envelope()->set_payload("x");
  EXPECT_FALSE(scan_envelope_frame(body_of(env) + body_of(hb), v));
  // Two envelope fields (protobuf would merge them).
  EXPECT_FALSE(scan_envelope_frame(body_of(env) + body_of(env), v));
  // Invalid UTF-8 in a string field: receivers' parsers would fail.
  for (auto bad : {std::string("\xff"), std::string("\xc0\x80"), std::string("\xed\xa0\x80")}) {
    std::string raw = "\x1a";
    std::string inner = std::string("\x22") + static_cast<char>(bad.size()) + bad; // route
    raw += static_cast<char>(inner.size());
    raw += inner;
    EXPECT_FALSE(scan_envelope_frame(raw, v)) << "route bytes " << bad.size();
    v1::Frame parsed;
    EXPECT_FALSE(parsed.ParseFromString(raw)) << "protobuf agrees it is invalid";
  }
  // Wrong wire type for a known field (payload as a varint).
  std::string raw = "\x1a\x02\x28\x01";
  EXPECT_FALSE(scan_envelope_frame(raw, v));
  // Truncated length.
  EXPECT_FALSE(scan_envelope_frame(std::string("\x1a\x10\x2a\x01x", 5), v));
  // Valid multi-byte UTF-8 is fine.
  v1::Frame ok;
  ok.mutable_envelope()->set_route("caf\xc3\xa9/\xe2\x98\x83");
  EXPECT_TRUE(scan_envelope_frame(body_of(ok), v));
}

TEST(EnvelopeScan, UnknownFieldsTravelUnchanged) {
  v1::Frame f;
  f.mutable_envelope()->set_payload("p");
  auto body = body_of(f);
  // Append an unknown field 99 (varint) inside the envelope.
  std::string env = f.envelope().SerializeAsString() + std::string("\x98\x06\x07", 3);
  std::string framed = "\x1a" + std::string(1, static_cast<char>(env.size())) + env;
  envelope_view v;
  ASSERT_TRUE(scan_envelope_frame(framed, v));
  std::vector<char> out;
  append_delivery_frame(out, v.envelope, 1, "a", 2);
  std::string_view relayed{out.data() + 4, out.size() - 4};
  EXPECT_NE(relayed.find(std::string("\x98\x06\x07", 3)), std::string_view::npos);
}

TEST(EnvelopeScan, VarintLimitsMatchProtobuf) {
  // A 6-byte tag or length is rejected by protobuf 3.21; so must the scanner.
  envelope_view v;
  v1::Frame parsed;
  // Envelope with an unknown varint field whose tag takes 6 bytes.
  std::string inner = std::string("\xfa\x80\x80\x80\x80\x00\x00", 7);
  std::string raw = "\x1a" + std::string(1, static_cast<char>(inner.size())) + inner;
  EXPECT_FALSE(parsed.ParseFromString(raw));
  EXPECT_FALSE(scan_envelope_frame(raw, v));
  // A payload whose length takes 6 bytes.
  inner = std::string("\x2a\x81\x80\x80\x80\x80\x00x", 8);
  raw = "\x1a" + std::string(1, static_cast<char>(inner.size())) + inner;
  EXPECT_FALSE(parsed.ParseFromString(raw));
  EXPECT_FALSE(scan_envelope_frame(raw, v));
  // A 5-byte (non-minimal) length is accepted by both.
  inner = std::string("\x2a\x81\x80\x80\x80\x00x", 7);
  raw = "\x1a" + std::string(1, static_cast<char>(inner.size())) + inner;
  EXPECT_TRUE(parsed.ParseFromString(raw));
  EXPECT_TRUE(scan_envelope_frame(raw, v));
  EXPECT_EQ(v.payload, "x");
}

namespace {

/// One field of `fd`'s type, encoded with wire type `wt` (contents valid
/// for that wire type).
std::string field_bytes(int number, uint32_t wt) {
  std::string out;
  proto::wire::put_varint(out, (static_cast<uint64_t>(number) << 3) | wt);
  switch (wt) {
  case proto::wire::varint_type:
    out.push_back('\x01');
    break;
  case proto::wire::fixed64_type:
    out.append(8, '\x01');
    break;
  case proto::wire::fixed32_type:
    out.append(4, '\x01');
    break;
  default: // length-delimited: empty contents are valid for every such type
    out.push_back('\x00');
  }
  return out;
}

uint32_t declared_wire_type(const google::protobuf::FieldDescriptor& fd) {
  using FD = google::protobuf::FieldDescriptor;
  switch (fd.type()) {
  case FD::TYPE_STRING:
  case FD::TYPE_BYTES:
  case FD::TYPE_MESSAGE:
    return proto::wire::length_type;
  case FD::TYPE_FIXED64:
  case FD::TYPE_SFIXED64:
  case FD::TYPE_DOUBLE:
    return proto::wire::fixed64_type;
  case FD::TYPE_FIXED32:
  case FD::TYPE_SFIXED32:
  case FD::TYPE_FLOAT:
    return proto::wire::fixed32_type;
  default:
    return proto::wire::varint_type;
  }
}

std::string frame_with_envelope(const std::string& env) {
  std::string body;
  proto::wire::put_bytes_field(body, v1::Frame::kEnvelopeFieldNumber, env);
  return body;
}

} // namespace

TEST(EnvelopeScan, KnowsEveryEnvelopeFieldOfTheSchema) {
  // Adding a field to wire.proto without teaching the scanner fails here: the
  // scanner would accept it with any wire type (as an unknown field), and a
  // typed field that arrives with another wire type reads as absent.
  auto& d = *v1::Envelope::descriptor();
  ASSERT_GT(d.field_count(), 0);
  for (int i = 0; i < d.field_count(); ++i) {
    auto& fd = *d.field(i);
    auto right = declared_wire_type(fd);
    envelope_view view;
    EXPECT_TRUE(scan_envelope_frame(frame_with_envelope(field_bytes(fd.number(), right)), view))
      << fd.name() << " with its own wire type";
    for (uint32_t wt : {proto::wire::varint_type, proto::wire::fixed64_type,
                        proto::wire::length_type, proto::wire::fixed32_type}) {
      if (wt == right)
        continue;
      auto body = frame_with_envelope(field_bytes(fd.number(), wt));
      EXPECT_FALSE(scan_envelope_frame(body, view))
        << "the scanner accepted " << fd.name() << " with wire type " << wt;
      v1::Frame f;
      EXPECT_EQ(proto::decode_frame(body, f), proto::frame_error::undecodable)
        << "the full parser accepted " << fd.name() << " with wire type " << wt;
    }
  }
}

TEST(EnvelopeScan, EveryFieldOfEveryFrameKindIsCheckedByTheFullParser) {
  // The same rule for Hello, Subscribe, ...: a field with the wrong wire type
  // is refused, never read as empty.
  auto& frame = *v1::Frame::descriptor();
  for (int k = 0; k < frame.field_count(); ++k) {
    auto& kind = *frame.field(k);
    auto& msg = *kind.message_type();
    for (int i = 0; i < msg.field_count(); ++i) {
      auto& fd = *msg.field(i);
      auto right = declared_wire_type(fd);
      for (uint32_t wt : {proto::wire::varint_type, proto::wire::fixed64_type,
                          proto::wire::length_type, proto::wire::fixed32_type}) {
        std::string body;
        proto::wire::put_bytes_field(body, static_cast<uint32_t>(kind.number()),
                                     field_bytes(fd.number(), wt));
        v1::Frame f;
        auto err = proto::decode_frame(body, f);
        bool packed = fd.is_packable() && wt == proto::wire::length_type;
        if (wt == right || packed)
          EXPECT_EQ(err, proto::frame_error::none) << kind.name() << "." << fd.name();
        else
          EXPECT_EQ(err, proto::frame_error::undecodable)
            << kind.name() << "." << fd.name() << " with wire type " << wt;
      }
    }
  }
}
