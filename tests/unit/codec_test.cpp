// Framing codec: partial reads, coalesced reads, limits, garbage.
#include <gtest/gtest.h>

#include "convoke/proto/codec.hpp"

using namespace convoke;
using namespace convoke::proto;

namespace {

v1::Frame envelope(const std::string& payload) {
  v1::Frame f;
  f.mutable_envelope()->set_payload(payload);
  f.mutable_envelope()->set_recipient("bob");
  return f;
}

std::vector<std::string> drain(frame_splitter& s) {
  std::vector<std::string> out;
  std::string_view body;
  while (s.next(body)) {
    v1::Frame f;
    EXPECT_EQ(decode_frame(body, f), frame_error::none);
    out.push_back(f.envelope().payload());
  }
  s.compact();
  return out;
}

std::string header(uint32_t n) {
  std::string h(4, '\0');
  write_header(h.data(), n);
  return h;
}

} // namespace

TEST(Codec, HeaderIsFourBytesBigEndian) {
  char buf[4];
  write_header(buf, 0x01020304);
  EXPECT_EQ(buf[0], 1);
  EXPECT_EQ(buf[3], 4);
  EXPECT_EQ(read_header(buf), 0x01020304u);
  write_header(buf, 0xFFFFFFFF);
  EXPECT_EQ(read_header(buf), 0xFFFFFFFFu);
}

TEST(Codec, EncodeDecodeRoundTrip) {
  auto bytes = encode_frame(envelope("hello"));
  ASSERT_GT(bytes.size(), header_size);
  EXPECT_EQ(read_header(bytes.data()), bytes.size() - header_size);
  v1::Frame f;
  ASSERT_EQ(decode_frame(std::string_view{bytes}.substr(header_size), f), frame_error::none);
  EXPECT_EQ(f.envelope().payload(), "hello");
  std::vector<char> vec;
  append_frame(envelope("x"), vec);
  append_frame(envelope("y"), vec);
  frame_splitter s;
  s.append(vec.data(), vec.size());
  EXPECT_EQ(drain(s), (std::vector<std::string>{"x", "y"}));
}

TEST(Codec, ByteByByteDeliveryYieldsOneFrame) {
  auto bytes = encode_frame(envelope(std::string(300, 'a')));
  frame_splitter s;
  std::vector<std::string> got;
  for (char c : bytes) {
    s.append(&c, 1);
    for (auto& x : drain(s))
      got.push_back(x);
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].size(), 300u);
  EXPECT_EQ(s.buffered(), 0u);
}

TEST(Codec, CoalescedFramesAndASplitTailAcrossReads) {
  std::string stream;
  for (int i = 0; i < 100; ++i)
    stream += encode_frame(envelope(std::to_string(i)));
  // Feed in uneven chunks that cut headers and bodies.
  frame_splitter s;
  std::vector<std::string> got;
  size_t pos = 0;
  size_t chunk = 1;
  while (pos < stream.size()) {
    auto n = std::min(chunk, stream.size() - pos);
    s.append(stream.data() + pos, n);
    pos += n;
    chunk = chunk * 3 % 97 + 1;
    for (auto& x : drain(s))
      got.push_back(x);
  }
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(got[static_cast<size_t>(i)], std::to_string(i));
}

TEST(Codec, ZeroLengthIsAnError) {
  frame_splitter s;
  auto h = header(0);
  s.append(h.data(), h.size());
  std::string_view body;
  EXPECT_FALSE(s.next(body));
  EXPECT_EQ(s.error(), frame_error::empty);
  EXPECT_EQ(to_code(s.error()), "frame_empty");
}

TEST(Codec, OversizeIsDetectedFromTheHeaderAlone) {
  frame_splitter s{1024};
  auto h = header(1025);
  s.append(h.data(), h.size()); // no body bytes sent: must not wait for them
  std::string_view body;
  EXPECT_FALSE(s.next(body));
  EXPECT_EQ(s.error(), frame_error::too_large);
  EXPECT_EQ(s.bad_length(), 1025u);
  EXPECT_EQ(to_code(s.error()), "frame_too_large");
}

TEST(Codec, ExactlyTheLimitIsAccepted) {
  frame_splitter s{1024};
  auto bytes = header(1024) + std::string(1024, '\0');
  s.append(bytes.data(), bytes.size());
  std::string_view body;
  ASSERT_TRUE(s.next(body));
  EXPECT_EQ(body.size(), 1024u);
}

TEST(Codec, ErrorIsSticky) {
  frame_splitter s;
  auto bad = header(0) + encode_frame(envelope("after"));
  s.append(bad.data(), bad.size());
  std::string_view body;
  EXPECT_FALSE(s.next(body));
  EXPECT_FALSE(s.next(body));
  EXPECT_EQ(s.error(), frame_error::empty);
}

TEST(Codec, GarbageBodiesAreUndecodable) {
  v1::Frame f;
  EXPECT_EQ(decode_frame(std::string_view{"\xff\xff\xff\xff", 4}, f), frame_error::undecodable);
  EXPECT_EQ(decode_frame(std::string_view{"\x00\x00", 2}, f), frame_error::undecodable);
  // A valid message with only an unknown field has no kind.
  EXPECT_EQ(decode_frame(std::string_view{"\xf8\x07\x01", 3}, f), frame_error::no_kind);
}

TEST(Codec, MemoryIsReleasedAfterALargeFrame) {
  frame_splitter s{8u << 20};
  auto big = encode_frame(envelope(std::string(4u << 20, 'b')));
  s.append(big.data(), big.size());
  drain(s);
  EXPECT_EQ(s.buffered(), 0u);
  auto small = encode_frame(envelope("x"));
  s.append(small.data(), small.size());
  EXPECT_EQ(drain(s).size(), 1u);
}
