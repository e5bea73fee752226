// fuzz_frame_splitter: proto::frame_splitter and the frame codec.
//
// Input: byte 0 picks the frame limit, and whether it changes after the first
// frame (as a session raises it after Welcome); byte 1 says how many of the
// next bytes are read sizes; the rest is the byte stream. As in NATS's
// FuzzParser, the stream is fed in reads of those sizes (cycling), then again
// in one read. Checks:
// - every body is non-empty and within the limit in force;
// - after compact() without an error, less than one maximal frame is buffered;
// - the error is sticky, and it, the bodies and the leftover bytes are the
//   same for the split and the unsplit stream (and add up to the stream);
// - a body that decode_frame accepts re-encodes (encode_frame/append_frame,
//   correct prefix) to a body that decodes to an equal message.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>

#include "check.hpp"
#include "convoke/proto/codec.hpp"

namespace {

using namespace convoke;
using proto::frame_error;

constexpr uint32_t limits[]
  = {16, 100, 1024, 64 * 1024, proto::default_max_frame_bytes, UINT32_MAX};
constexpr size_t n_limits = std::size(limits);

struct outcome {
  std::vector<std::string> bodies;
  frame_error error = frame_error::none;
  uint32_t bad_length = 0;
  size_t buffered = 0;
};

/// Feeds `stream` in reads of sizes[i] + 1 bytes (one read if `sizes` is
/// empty), draining next() and compacting after each read like a session.
outcome split(std::string_view stream, std::span<const uint8_t> sizes, uint32_t first_limit,
              uint32_t later_limit) {
  proto::frame_splitter s{first_limit};
  outcome o;
  size_t pos = 0;
  size_t i = 0;
  while (pos < stream.size()) {
    auto n = stream.size() - pos;
    if (!sizes.empty())
      n = std::min<size_t>(n, size_t{sizes[i++ % sizes.size()]} + 1);
    s.append(stream.data() + pos, n);
    pos += n;
    std::string_view body;
    bool had_error = s.error() != frame_error::none;
    while (s.next(body)) {
      FUZZ_CHECK(!had_error);
      FUZZ_CHECK(!body.empty() && body.size() <= s.max_frame_bytes());
      o.bodies.emplace_back(body);
      s.set_max_frame_bytes(later_limit);
    }
    s.compact();
    FUZZ_CHECK(!had_error || s.error() == o.error); // sticky
    if (s.error() == frame_error::none)             // memory stays bounded
      FUZZ_CHECK(s.buffered() < proto::header_size + s.max_frame_bytes());
    o.error = s.error();
  }
  o.bad_length = s.bad_length();
  o.buffered = s.buffered();
  return o;
}

void check_round_trip(std::string_view body) {
  v1::Frame frame;
  if (proto::decode_frame(body, frame) != frame_error::none)
    return;
  auto encoded = proto::encode_frame(frame);
  FUZZ_CHECK(encoded.size() >= proto::header_size);
  FUZZ_CHECK(proto::read_header(encoded.data()) == encoded.size() - proto::header_size);
  std::vector<char> appended{'x'};
  proto::append_frame(frame, appended);
  FUZZ_CHECK(std::string_view(appended.data() + 1, appended.size() - 1) == encoded);
  v1::Frame again;
  auto err = proto::decode_frame(std::string_view{encoded}.substr(proto::header_size), again);
  FUZZ_CHECK(err == frame_error::none);
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(frame, again));
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr); // no "invalid UTF-8" lines per input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2)
    return 0;
  auto first_limit = limits[data[0] % n_limits];
  auto later_limit = (data[0] & 0x80) != 0 ? limits[(data[0] >> 3) % n_limits] : first_limit;
  size_t n_sizes = std::min<size_t>(data[1] % 16, size - 2);
  std::span<const uint8_t> sizes{data + 2, n_sizes};
  std::string_view stream{reinterpret_cast<const char*>(data) + 2 + n_sizes, size - 2 - n_sizes};

  auto cut = split(stream, sizes, first_limit, later_limit);
  auto whole = split(stream, {}, first_limit, later_limit);
  FUZZ_CHECK(cut.bodies == whole.bodies);
  FUZZ_CHECK(cut.error == whole.error && cut.bad_length == whole.bad_length);
  FUZZ_CHECK(cut.buffered == whole.buffered);
  size_t consumed = cut.buffered;
  for (auto& b : cut.bodies)
    consumed += proto::header_size + b.size();
  FUZZ_CHECK(consumed == stream.size());
  if (cut.error == frame_error::too_large)
    FUZZ_CHECK(cut.bad_length > first_limit || cut.bad_length > later_limit);
  if (cut.error == frame_error::empty)
    FUZZ_CHECK(cut.bad_length == 0);

  for (auto& b : cut.bodies)
    check_round_trip(b);
  return 0;
}
