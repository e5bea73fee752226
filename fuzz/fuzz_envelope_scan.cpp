// fuzz_envelope_scan: the relay's fast path (server::scan_envelope_frame)
// against the full parser (proto::decode_frame) and protobuf's own parser.
//
// The input is a frame body. Checks:
// - decode_frame accepts => proto::conforms accepts and protobuf's
//   ParseFromArray accepts, with an equal message;
// - protobuf accepts => its canonical re-encoding conforms exactly when the
//   parsed message holds no unknown group and no known field number among its
//   unknown fields (a field sent with the wrong wire type): conforms refuses
//   nothing else that protobuf takes;
// - the scanner accepts => decode_frame accepts, the frame is an envelope,
//   and the view's recipient/route/payload/trace_id/sent_ns/client_seq/
//   request_id/in_reply_to are the parsed ones, and the view's envelope bytes are the
//   envelope's; append_delivery_frame then decodes to a Delivery with the
//   stamp and exactly that envelope;
// - the body is exactly one field 3 (length-delimited) and decode_frame
//   accepts => the scanner accepts (the two must agree);
// - decode_frame accepts an envelope the scanner does not => its canonical
//   re-encoding without unknown fields (the server's slow path) scans, with
//   the same fields.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/message_differencer.h>

#include "check.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/wire_check.hpp"
#include "envelope_scan.hpp"

namespace {

using namespace convoke;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::UnknownField;
using google::protobuf::util::MessageDifferencer;

/// Reads a varint of at most `max_bytes` bytes (written independently of
/// proto/wire_format.hpp on purpose).
bool read_varint(std::string_view& in, uint64_t& v, int max_bytes) {
  v = 0;
  for (int i = 0; i < max_bytes && i < static_cast<int>(in.size()); ++i) {
    auto b = static_cast<uint8_t>(in[i]);
    v |= uint64_t{b & 0x7Fu} << (7 * i);
    if (b < 0x80) {
      in.remove_prefix(i + 1);
      return true;
    }
  }
  return false;
}

/// True if `body` is exactly one field number 3 with wire type 2.
bool single_envelope_field(std::string_view body) {
  uint64_t tag = 0;
  uint64_t len = 0;
  return read_varint(body, tag, 5) && tag == ((3u << 3) | 2u) && read_varint(body, len, 5)
         && len == body.size();
}

/// True if `m` (or a message inside it) kept an unknown group or an unknown
/// field whose number is a known field: what conforms() refuses on purpose.
bool has_refused_unknowns(const Message& m) {
  auto& r = *m.GetReflection();
  auto& d = *m.GetDescriptor();
  auto& unknown = r.GetUnknownFields(m);
  for (int i = 0; i < unknown.field_count(); ++i) {
    auto& f = unknown.field(i);
    if (f.type() == UnknownField::TYPE_GROUP || d.FindFieldByNumber(f.number()) != nullptr)
      return true;
  }
  std::vector<const FieldDescriptor*> fields;
  r.ListFields(m, &fields);
  for (auto fd : fields) {
    if (fd->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE)
      continue;
    if (!fd->is_repeated() && has_refused_unknowns(r.GetMessage(m, fd)))
      return true;
    for (int i = 0; fd->is_repeated() && i < r.FieldSize(m, fd); ++i)
      if (has_refused_unknowns(r.GetRepeatedMessage(m, fd, i)))
        return true;
  }
  return false;
}

void check_view(const server::envelope_view& view, const v1::Envelope& env) {
  FUZZ_CHECK(view.recipient == env.recipient());
  FUZZ_CHECK(view.route == env.route());
  FUZZ_CHECK(view.payload == env.payload());
  FUZZ_CHECK(view.trace_id == env.trace_id());
  FUZZ_CHECK(view.sent_ns == env.sent_unix_nanos());
  FUZZ_CHECK(view.client_seq == env.client_seq());
  FUZZ_CHECK(view.request_id == env.request_id());
  FUZZ_CHECK(view.in_reply_to == env.in_reply_to());
}

void check_relayed(const server::envelope_view& view, const v1::Envelope& env, uint8_t seed) {
  // Stamps of different encoded lengths, as a server hands out over time.
  uint64_t message_id = seed & 1 ? UINT64_MAX - seed : seed;
  int64_t relayed_ns = seed & 2 ? -1 - int64_t{seed} : int64_t{1'700'000'000'000'000'000} + seed;
  std::string sender = seed & 4 ? std::string(64, 'a') : "agent-" + std::to_string(seed);

  std::vector<char> out(seed % 7, 'x'); // bytes of earlier frames
  auto start = server::append_delivery_frame(out, view.envelope, message_id, sender, relayed_ns);
  FUZZ_CHECK(start + view.envelope.size() == out.size());
  FUZZ_CHECK(std::string_view(out.data() + start, view.envelope.size()) == view.envelope);
  auto frame_start = static_cast<size_t>(seed % 7);
  FUZZ_CHECK(proto::read_header(out.data() + frame_start)
             == out.size() - frame_start - proto::header_size);
  FUZZ_CHECK(out.size() - frame_start - view.envelope.size()
             <= server::delivery_overhead(sender.size()));
  v1::Frame relayed;
  auto body = std::string_view{out.data() + frame_start + proto::header_size,
                               out.size() - frame_start - proto::header_size};
  auto err = proto::decode_frame(body, relayed);
  FUZZ_CHECK(err == proto::frame_error::none && relayed.has_delivery());
  auto& d = relayed.delivery();
  FUZZ_CHECK(d.message_id() == message_id && d.sender() == sender
             && d.relayed_unix_nanos() == relayed_ns);
  FUZZ_CHECK(MessageDifferencer::Equals(d.envelope(), env));
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr); // no "invalid UTF-8" lines per input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body{reinterpret_cast<const char*>(data), size};

  v1::Frame by_protobuf;
  bool protobuf_ok = by_protobuf.ParseFromArray(data, static_cast<int>(size));
  bool conforms = proto::conforms(body, *v1::Frame::descriptor());
  v1::Frame frame;
  auto err = proto::decode_frame(body, frame);
  if (err == proto::frame_error::none) {
    FUZZ_CHECK(conforms && protobuf_ok);
    FUZZ_CHECK(MessageDifferencer::Equals(frame, by_protobuf));
  }
  if (protobuf_ok) {
    bool refused = has_refused_unknowns(by_protobuf);
    FUZZ_CHECK(!(conforms && refused));
    auto canonical = by_protobuf.SerializeAsString();
    FUZZ_CHECK(proto::conforms(canonical, *v1::Frame::descriptor()) == !refused);
  }

  server::envelope_view view;
  bool fast = server::scan_envelope_frame(body, view);
  if (err == proto::frame_error::none && single_envelope_field(body))
    FUZZ_CHECK(fast);
  if (!fast && err == proto::frame_error::none && frame.has_envelope()) {
    // The server's slow path (session.cpp relay_parsed_envelope): unknown
    // fields dropped, re-encoded canonically; the scanner must take that
    // (the server treats a refusal there as impossible), with the same fields.
    v1::Frame canonical = frame;
    for (Message* m :
         {static_cast<Message*>(&canonical), static_cast<Message*>(canonical.mutable_envelope())})
      m->GetReflection()->MutableUnknownFields(m)->Clear();
    auto reencoded = canonical.SerializeAsString();
    server::envelope_view again;
    FUZZ_CHECK(server::scan_envelope_frame(reencoded, again));
    check_view(again, canonical.envelope());
  }
  if (fast) {
    FUZZ_CHECK(err == proto::frame_error::none && frame.has_envelope());
    check_view(view, frame.envelope());
    check_relayed(view, frame.envelope(), size > 0 ? data[size - 1] : 0);
  }
  return 0;
}
