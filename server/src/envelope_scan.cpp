#include "envelope_scan.hpp"

#include <cstring>

#include "convoke/proto/codec.hpp"
#include "convoke/proto/wire_format.hpp"
#include "convoke/v1/wire.pb.h"

namespace convoke::server {

namespace {

using namespace proto::wire;

using E = v1::Envelope;

/// A headers map entry: key = 1, value = 2, both strings. Notes the value
/// of a `traceparent` entry (the last one wins, as protobuf's map does).
bool valid_map_entry(std::string_view entry, envelope_view& out) {
  bool ok = true;
  std::string_view key;
  std::string_view value;
  bool well_formed = for_each_field(entry, [&](const field& f) {
    if (f.number != 1 && f.number != 2)
      return;
    if (f.type != length_type || !valid_utf8(f.bytes))
      ok = false;
    else
      (f.number == 1 ? key : value) = f.bytes;
  });
  if (well_formed && ok && key == "traceparent")
    out.traceparent = value;
  if (key == "summoner-remote-addr") // summoner::header_remote_addr
    out.summoner_remote_addr = true;
  return well_formed && ok;
}

/// Envelope fields (wire.proto) and what a relay must check about them. The
/// field numbers come from the generated code; a unit test walks
/// Envelope::descriptor() so that a field added to wire.proto without a case
/// here fails the tests.
bool scan_envelope(std::string_view env, envelope_view& out) {
  bool ok = true;
  auto string_field = [&](const field& f) {
    ok = ok && f.type == length_type && valid_utf8(f.bytes);
    return f.bytes;
  };
  auto bytes_field = [&](const field& f) {
    ok = ok && f.type == length_type;
    return f.bytes;
  };
  auto varint_field = [&](const field& f) {
    ok = ok && f.type == varint_type;
    return f.value;
  };
  auto well_formed = for_each_field(env, [&](const field& f) {
    switch (f.number) {
    case E::kSenderFieldNumber: // overridden by the stamp, but must still parse
    case E::kContentTypeFieldNumber:
      string_field(f);
      break;
    case E::kRecipientFieldNumber:
      out.recipient = string_field(f);
      break;
    case E::kRouteFieldNumber:
      out.route = string_field(f);
      break;
    case E::kPayloadFieldNumber:
      out.payload = bytes_field(f);
      break;
    case E::kHeadersFieldNumber: // one map entry
      ok = ok && f.type == length_type && valid_map_entry(f.bytes, out);
      break;
    case E::kTraceIdFieldNumber:
      out.trace_id = bytes_field(f);
      break;
    case E::kMessageIdFieldNumber:        // overridden
    case E::kRelayedUnixNanosFieldNumber: // overridden
      varint_field(f);
      break;
    case E::kInReplyToFieldNumber:
      out.in_reply_to = varint_field(f);
      break;
    case E::kSentUnixNanosFieldNumber:
      out.sent_ns = static_cast<int64_t>(varint_field(f));
      break;
    case E::kClientSeqFieldNumber:
      out.client_seq = varint_field(f);
      break;
    case E::kRequestIdFieldNumber:
      out.request_id = varint_field(f);
      break;
    default:
      break; // unknown fields are kept and relayed unchanged
    }
  });
  return well_formed && ok;
}

} // namespace

bool scan_envelope_frame(std::string_view body, envelope_view& out) {
  auto p = body.data();
  auto end = p + body.size();
  field env;
  // Exactly one top-level field, the envelope (a second one, or any other
  // oneof member, changes what receivers would see: full parser).
  if (!next_field(p, end, env) || env.number != v1::Frame::kEnvelopeFieldNumber
      || env.type != length_type || p != end)
    return false;
  out = envelope_view{};
  out.envelope = env.bytes;
  return scan_envelope(env.bytes, out);
}

size_t append_delivery_frame(std::vector<char>& out, std::string_view envelope, uint64_t message_id,
                             std::string_view sender, int64_t relayed_ns) {
  using D = v1::Delivery;
  // Frame{delivery = Delivery{message_id, sender, relayed_unix_nanos, envelope}}:
  // the stamp first, then the sender's envelope bytes as they came.
  auto relayed = static_cast<uint64_t>(relayed_ns);
  auto delivery_size = varint_size(D::kMessageIdFieldNumber << 3) + varint_size(message_id)
                       + bytes_field_size(D::kSenderFieldNumber, sender.size())
                       + varint_size(D::kRelayedUnixNanosFieldNumber << 3) + varint_size(relayed)
                       + bytes_field_size(D::kEnvelopeFieldNumber, envelope.size());
  auto total = bytes_field_size(v1::Frame::kDeliveryFieldNumber, delivery_size);
  auto offset = out.size();
  out.resize(offset + proto::header_size + total);
  auto p = out.data() + offset;
  proto::write_header(p, static_cast<uint32_t>(total));
  p += proto::header_size;
  put_varint(p, (uint64_t{v1::Frame::kDeliveryFieldNumber} << 3) | length_type);
  put_varint(p, delivery_size);
  put_varint(p, (uint64_t{D::kMessageIdFieldNumber} << 3) | varint_type);
  put_varint(p, message_id);
  put_varint(p, (uint64_t{D::kSenderFieldNumber} << 3) | length_type);
  put_varint(p, sender.size());
  std::memcpy(p, sender.data(), sender.size());
  p += sender.size();
  put_varint(p, (uint64_t{D::kRelayedUnixNanosFieldNumber} << 3) | varint_type);
  put_varint(p, relayed);
  put_varint(p, (uint64_t{D::kEnvelopeFieldNumber} << 3) | length_type);
  put_varint(p, envelope.size());
  auto envelope_at = static_cast<size_t>(p - out.data());
  std::memcpy(p, envelope.data(), envelope.size());
  return envelope_at;
}

size_t delivery_overhead(size_t sender_size) {
  // Frame tag and length, the stamp fields at their largest, the envelope's
  // tag and length.
  return proto::header_size + 1 + 5 + (1 + 10) + (1 + varint_size(sender_size) + sender_size)
         + (1 + 10) + (1 + 5);
}

} // namespace convoke::server
