// fuzz_summoner: the Summoner compatibility listener's protocol core
// (server/src/summoner_wire.hpp), from a client's bytes to the relay line
// another Summoner client receives.
//
// Input: byte 0 picks the line limit (1-64 bytes, 200, 4 KiB or 64 KiB),
// byte 1 seeds the read sizes (1-64 bytes); the rest is the byte stream,
// fed through line_splitter once in reads of those sizes (now and then several
// reads before the lines are taken) and once in one read. Checks:
// - both feeds give the same lines and the same number of too_long events;
//   a too_long size is above the limit; buffered() stays within the limit
//   (+1) after next() returned none; lines hold no '\n' and are at most
//   max_line long;
// - every line that is valid UTF-8 classifies consistently: typed lines
//   rebuild to themselves, json lines are is_json, text lines are not;
//   is_json agrees with nlohmann-json (up to 256 levels of nesting, no NUL
//   byte, no BOM: nlohmann's own rules there);
// - its envelope frame is taken by the relay's fast path
//   (scan_envelope_frame) and by decode_frame, with the payload, route,
//   content type and sent time written;
// - the Delivery of that envelope renders to exactly the relay line of the
//   original line (Summoner to Summoner relaying is exact), a JSON line
//   ending in '\n' whose size relay_line_size gives; one byte less of limit
//   makes it too large;
// - a line that is not UTF-8 sent as a payload renders to a base64 object
//   that is JSON.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "check.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/wire_format.hpp"
#include "envelope_scan.hpp"
#include "summoner_wire.hpp"

namespace {

using namespace convoke;
using namespace convoke::server::summoner;

constexpr std::string_view addr = "127.0.0.1:35586";
constexpr std::string_view route = "summoner";

size_t pick_limit(uint8_t b) {
  if (b < 192)
    return 1 + b % 64;
  if (b < 224)
    return 200;
  if (b < 248)
    return 4096;
  return sdk_line_limit;
}

struct events {
  std::vector<std::string> lines;
  size_t too_long = 0;
};

void drain(line_splitter& s, events& ev) {
  std::string_view line;
  for (auto r = s.next(line); r != line_splitter::result::none; r = s.next(line)) {
    if (r == line_splitter::result::too_long) {
      FUZZ_CHECK(s.too_long_size() > s.max_line());
      ++ev.too_long;
      continue;
    }
    FUZZ_CHECK(line.size() <= s.max_line());
    FUZZ_CHECK(line.find('\n') == std::string_view::npos);
    ev.lines.emplace_back(line);
  }
  s.compact();
  FUZZ_CHECK(s.buffered() <= s.max_line() + 1);
}

void finish(line_splitter& s, events& ev) {
  std::string_view last;
  if (s.take_last(last)) {
    FUZZ_CHECK(last.size() <= s.max_line());
    ev.lines.emplace_back(last);
  }
}

size_t nesting(std::string_view s) {
  size_t n = 0;
  for (auto c : s)
    n += c == '[' || c == '{';
  return n;
}

/// The Delivery of `frame` (a length-prefixed Frame{envelope}) rendered.
std::string render(const std::vector<char>& frame, size_t max_line, render_result& r) {
  std::string_view body{frame.data() + proto::header_size, frame.size() - proto::header_size};
  server::envelope_view view;
  FUZZ_CHECK(server::scan_envelope_frame(body, view));
  std::vector<char> deliveries;
  server::append_delivery_frame(deliveries, view.envelope, 7, "summoner@127.0.0.1:35586", 1);
  std::string out;
  std::string scratch;
  r = render_deliveries({deliveries.data(), deliveries.size()}, max_line, out, scratch);
  FUZZ_CHECK(r.malformed == 0);
  return out;
}

void check_line(std::string_view line, uint64_t seed) {
  if (!proto::wire::valid_utf8(line)) {
    // Not UTF-8 (the listener refuses such lines): as a binary payload.
    line_message msg;
    msg.payload = line;
    std::vector<char> frame;
    append_envelope_frame(frame, msg, route, addr, 1);
    render_result r;
    auto out = render(frame, SIZE_MAX, r);
    FUZZ_CHECK(r.lines == 1 && !out.empty() && out.back() == '\n');
    FUZZ_CHECK(is_json(std::string_view{out}.substr(0, out.size() - 1)));
    FUZZ_CHECK(out.find(R"("content": "{\"content_type\": )") != std::string::npos);
    return;
  }
  auto msg = classify(line);
  bool json_ok = is_json(line);
  // nlohmann-json skips a UTF-8 BOM and ends its input at a NUL byte.
  if (nesting(line) <= 256 && line.substr(0, 3) != "\xEF\xBB\xBF"
      && line.find('\0') == std::string_view::npos)
    FUZZ_CHECK(json_ok == nlohmann::json::accept(line));
  switch (msg.kind) {
  case line_kind::typed: {
    FUZZ_CHECK(json_ok && is_json(msg.payload) && is_json(msg.type));
    std::string rebuilt;
    rebuild_typed(rebuilt, msg.version, msg.payload, msg.type);
    FUZZ_CHECK(rebuilt == line);
    break;
  }
  case line_kind::json:
    FUZZ_CHECK(json_ok && msg.payload == line);
    break;
  case line_kind::text:
    FUZZ_CHECK(!json_ok && msg.payload == line);
    break;
  }

  auto sent = static_cast<int64_t>(seed * 0x9E3779B97F4A7C15ull);
  std::vector<char> frame;
  append_envelope_frame(frame, msg, route, addr, sent);
  FUZZ_CHECK(proto::read_header(frame.data()) == frame.size() - proto::header_size);
  std::string_view body{frame.data() + proto::header_size, frame.size() - proto::header_size};
  v1::Frame parsed;
  FUZZ_CHECK(proto::decode_frame(body, parsed) == proto::frame_error::none);
  FUZZ_CHECK(parsed.has_envelope());
  auto& env = parsed.envelope();
  FUZZ_CHECK(env.route() == route && env.payload() == msg.payload && env.sent_unix_nanos() == sent);
  FUZZ_CHECK(env.content_type()
             == (msg.kind == line_kind::text ? text_content_type : json_content_type));
  FUZZ_CHECK(env.headers().at(std::string{header_remote_addr}) == addr);

  std::string expected;
  append_relay_line(expected, addr, line);
  FUZZ_CHECK(relay_line_size(addr, line) == expected.size());
  render_result r;
  auto out = render(frame, SIZE_MAX, r);
  FUZZ_CHECK(r.lines == 1 && r.too_large == 0);
  FUZZ_CHECK(out == expected);
  FUZZ_CHECK(out.back() == '\n');
  FUZZ_CHECK(is_json(std::string_view{out}.substr(0, out.size() - 1)));
  auto tight = render(frame, out.size(), r);
  FUZZ_CHECK(r.lines == 1 && tight == out);
  render(frame, out.size() - 1, r);
  FUZZ_CHECK(r.lines == 0 && r.too_large == 1 && r.first_too_large == 7 && r.last_too_large == 7);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2)
    return 0;
  auto max_line = pick_limit(data[0]);
  uint64_t rng = data[1] * 0x2545F4914F6CDD1Dull + 1;
  auto stream = std::string_view{reinterpret_cast<const char*>(data) + 2, size - 2};

  events chunked;
  line_splitter a{max_line};
  for (size_t at = 0; at < stream.size();) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    auto n = std::min<size_t>(1 + rng % 64, stream.size() - at);
    a.append(stream.data() + at, n);
    at += n;
    // Now and then several reads before the lines are taken.
    if ((rng >> 32) % 4 != 0)
      drain(a, chunked);
  }
  drain(a, chunked);
  finish(a, chunked);

  events whole;
  line_splitter b{max_line};
  b.append(stream.data(), stream.size());
  drain(b, whole);
  finish(b, whole);

  FUZZ_CHECK(chunked.lines == whole.lines);
  FUZZ_CHECK(chunked.too_long == whole.too_long);

  uint64_t seed = data[1];
  for (auto& line : whole.lines)
    check_line(line, seed++);
  return 0;
}
