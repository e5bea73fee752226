// parse_json: JSON trace lines (the keys of the issue-10 contract) back into
// trace::event; every malformed line is a precise error.

#include <gtest/gtest.h>

#include "convoke/common/text.hpp"
#include "convoke/common/trace_event.hpp"

namespace {

using namespace convoke;
using trace::kind;

TEST(TraceParse, FullRelayLine) {
  auto r = trace::parse_json(
    R"({"ts":"2026-11-30T12:00:01.123456Z","event":"relay","seq":7,"boot":"00112233aabbccdd",)"
    R"("message_id":42,"from":"alice","to":"*","route":"chat.eu","count":3,"fanout":3,)"
    R"("audience":5,"recipients":["bob","carol","dave"],"bytes":12,)"
    R"("sent_unix_nanos":1796040001000000000,"accepted_unix_nanos":1796040001100000000,)"
    R"("ts_unix_nanos":1796040001123456789,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",)"
    R"("span_id":"00f067aa0ba902b7","request_id":9,"payload":"hi\nthere","payload_truncated":true})");
  ASSERT_TRUE(r.ev) << r.error;
  auto& ev = *r.ev;
  EXPECT_EQ(ev.what, kind::relay);
  EXPECT_EQ(ev.seq, 7u);
  EXPECT_EQ(ev.boot, "00112233aabbccdd");
  EXPECT_EQ(ev.ts_ns, 1796040001123456789); // ts_unix_nanos is more precise than ts
  EXPECT_EQ(ev.message_id, 42u);
  EXPECT_EQ(ev.sender, "alice");
  EXPECT_EQ(ev.recipient, ""); // "*": a broadcast
  EXPECT_EQ(ev.route, "chat.eu");
  EXPECT_EQ(ev.count, 3u);
  EXPECT_EQ(ev.audience, 5u);
  EXPECT_EQ(ev.recipients, (std::vector<std::string>{"bob", "carol", "dave"}));
  EXPECT_EQ(ev.payload_bytes, 12u);
  EXPECT_EQ(ev.sent_ns, 1796040001000000000);
  EXPECT_EQ(ev.accepted_ns, 1796040001100000000);
  EXPECT_EQ(to_hex(ev.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(to_hex(ev.span_id), "00f067aa0ba902b7");
  EXPECT_EQ(ev.request_id, 9u);
  EXPECT_EQ(ev.payload, "hi\nthere");
  EXPECT_TRUE(ev.payload_truncated);
}

TEST(TraceParse, TimeFromTsWhenNoNanos) {
  auto r = trace::parse_json(
    R"({"ts":"2026-11-30T12:00:01.123456Z","event":"dropped","seq":1,"boot":"b",)"
    R"("message_id":3,"last_message_id":9,"to":"bob","count":7,"reason":"slow_consumer"})");
  ASSERT_TRUE(r.ev) << r.error;
  EXPECT_EQ(r.ev->what, kind::dropped);
  EXPECT_EQ(r.ev->ts_ns, *parse_timestamp("2026-11-30T12:00:01.123456Z"));
  EXPECT_EQ(r.ev->last_message_id, 9u);
  EXPECT_EQ(r.ev->recipient, "bob");
  EXPECT_EQ(r.ev->reason, "slow_consumer");
}

TEST(TraceParse, JoinedAgentAddressIdentity) {
  auto r = trace::parse_json(
    R"({"ts":"2026-11-30T12:00:01Z","event":"joined","seq":1,"boot":"b","agent":"alice",)"
    R"("address":"127.0.0.1:5000","identity":"ops","unknown_future_key":{"a":1}})");
  ASSERT_TRUE(r.ev) << r.error;
  EXPECT_EQ(r.ev->what, kind::joined);
  EXPECT_EQ(r.ev->sender, "alice");
  EXPECT_EQ(r.ev->address, "127.0.0.1:5000");
  EXPECT_EQ(r.ev->identity, "ops");
}

TEST(TraceParse, EveryKindName) {
  for (auto name : {"relay", "undeliverable", "dropped", "rejected", "written", "gap", "joined",
                    "left", "audience"}) {
    auto r = trace::parse_json(std::string{R"({"ts":"2026-11-30T12:00:01Z","event":")"} + name
                               + R"(","seq":1,"boot":"b"})");
    ASSERT_TRUE(r.ev) << name << ": " << r.error;
    EXPECT_EQ(trace::to_string(r.ev->what), name);
  }
}

struct bad_line {
  const char* line;
  const char* error_part;
};

class TraceParseBad : public ::testing::TestWithParam<bad_line> {};

TEST_P(TraceParseBad, PreciseError) {
  auto r = trace::parse_json(GetParam().line);
  EXPECT_FALSE(r.ev);
  EXPECT_NE(r.error.find(GetParam().error_part), std::string::npos) << r.error;
}

INSTANTIATE_TEST_SUITE_P(
  Lines, TraceParseBad,
  ::testing::Values(
    bad_line{"", "empty line"},
    bad_line{"2026-11-30T12:00:01.000001Z relay m=1 a -> b bytes=3", "not JSON"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","from":"al)", "cut short"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay"}} x)", "syntax error at byte"},
    bad_line{R"(["ts","event"])", "not JSON (a JSON trace line starts with '{')"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","seq":1})", "no 'event' field"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":5})", "'event' is not a string"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"server started"})",
             "unknown event kind \"server started\""},
    bad_line{R"({"event":"relay","seq":1})", "no 'ts' field"},
    bad_line{R"({"ts":"yesterday","event":"relay"})", "'ts' is not an RFC 3339 time"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","seq":-1})",
             "'seq' is not an integer from 0 to 18446744073709551615"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","count":4294967296})",
             "'count' is not an integer from 0 to 4294967295"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","bytes":1.5})",
             "'bytes' is not an integer"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","from":7})", "'from' is not a string"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","trace_id":"xyz1"})",
             "'trace_id' is not hex digits"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","recipients":"bob"})",
             "'recipients' is not an array of names"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","recipients":["a",1]})",
             "'recipients' is not an array of names"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","payload_truncated":1})",
             "'payload_truncated' is not true or false"},
    bad_line{R"({"ts":"2026-11-30T12:00:01Z","event":"relay","x":[[[1]]]})", "nested deeper"}));

TEST(TraceParse, DeepNestingIsRefusedWithoutRecursion) {
  // A hostile line: a million nested arrays must not exhaust the stack.
  std::string line = R"({"ts":"2026-11-30T12:00:01Z","event":"relay","x":)";
  line.append(1'000'000, '[');
  line.append(1'000'000, ']');
  line += "}";
  auto r = trace::parse_json(line);
  EXPECT_FALSE(r.ev);
  EXPECT_NE(r.error.find("nested deeper"), std::string::npos) << r.error;
}

TEST(TraceParse, OversizedLineRefusedUnparsed) {
  std::string line = R"({"ts":"2026-11-30T12:00:01Z","event":"relay","payload":")";
  line.append(9u << 20, 'a');
  line += "\"}";
  auto r = trace::parse_json(line);
  EXPECT_FALSE(r.ev);
  EXPECT_NE(r.error.find("more than the"), std::string::npos) << r.error;
}

TEST(TraceParse, GarbageBytesNeverCrash) {
  // Every prefix of a valid line and a few byte flips: an event or an error.
  std::string good = R"({"ts":"2026-11-30T12:00:01.5Z","event":"relay","seq":1,"boot":"b",)"
                     R"("from":"a","to":"b","recipients":["x","y"],"payload":"\u00e9"})";
  ASSERT_TRUE(trace::parse_json(good).ev);
  for (size_t n = 0; n < good.size(); ++n) {
    auto r = trace::parse_json(std::string_view{good}.substr(0, n));
    EXPECT_TRUE(r.ev.has_value() != !r.error.empty()) << n;
    EXPECT_FALSE(r.ev) << n;
    auto flipped = good;
    flipped[n] = static_cast<char>(flipped[n] ^ 0x5a);
    auto f = trace::parse_json(flipped);
    EXPECT_TRUE(f.ev.has_value() != !f.error.empty()) << n;
  }
}

TEST(Timestamps, ParseIsTheInverseOfFormat) {
  for (int64_t ns : {int64_t{0}, int64_t{1796040001123456000}, int64_t{951782400000001000}})
    EXPECT_EQ(parse_timestamp(format_timestamp(ns)), ns);
  EXPECT_EQ(parse_timestamp("2026-11-30T13:00:00+01:00"), parse_timestamp("2026-11-30T12:00:00Z"));
  EXPECT_EQ(parse_timestamp("2026-11-30T12:00:00.5Z"),
            *parse_timestamp("2026-11-30T12:00:00Z") + 500'000'000);
  for (auto bad :
       {"2026-11-30", "2026-02-30T00:00:00Z", "2026-11-30T24:00:00Z", "2026-11-30T12:00:00",
        "2026-11-30T12:00:00.Z", "2026-11-30T12:00:00Zx", "1969-12-31T23:59:59Z"})
    EXPECT_FALSE(parse_timestamp(bad)) << bad;
}

TEST(Hex, FromHex) {
  EXPECT_EQ(from_hex("00ffA0"), std::string("\x00\xff\xa0", 3));
  EXPECT_FALSE(from_hex("abc"));
  EXPECT_FALSE(from_hex("zz"));
  EXPECT_EQ(from_hex(""), std::string{});
}

// Round trip: what the trace writer formats, parse_json reads back.
TEST(TraceParse, RoundTripsFormatJson) {
  trace::event ev;
  ev.what = kind::relay;
  ev.seq = 12;
  ev.boot = "0123456789abcdef";
  ev.ts_ns = 1796040001123456000;
  ev.message_id = 77;
  ev.sender = "alice";
  ev.route = "chat.eu";
  ev.count = 2;
  ev.audience = 3;
  ev.recipients = {"bob", "carol \"c\""};
  ev.payload_bytes = 5;
  ev.sent_ns = 1796040001000000000;
  ev.accepted_ns = 1796040001100000000;
  ev.trace_id = std::string("\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36", 16);
  ev.span_id = std::string("\x00\xf0\x67\xaa\x0b\xa9\x02\xb7", 8);
  ev.request_id = 4;
  ev.in_reply_to = 3;
  ev.payload = "h\xc3\xa9llo\n";
  ev.payload_truncated = true;
  ev.reason = "";
  auto line = trace::format_json(ev);
  auto r = trace::parse_json(line);
  ASSERT_TRUE(r.ev) << r.error << "\n" << line;
  auto& back = *r.ev;
  EXPECT_EQ(back.what, ev.what);
  EXPECT_EQ(back.seq, ev.seq);
  EXPECT_EQ(back.boot, ev.boot);
  EXPECT_EQ(back.ts_ns, ev.ts_ns);
  EXPECT_EQ(back.message_id, ev.message_id);
  EXPECT_EQ(back.sender, ev.sender);
  EXPECT_EQ(back.recipient, ev.recipient);
  EXPECT_EQ(back.route, ev.route);
  EXPECT_EQ(back.count, ev.count);
  EXPECT_EQ(back.audience, ev.audience);
  EXPECT_EQ(back.recipients, ev.recipients);
  EXPECT_EQ(back.payload_bytes, ev.payload_bytes);
  EXPECT_EQ(back.sent_ns, ev.sent_ns);
  EXPECT_EQ(back.accepted_ns, ev.accepted_ns);
  EXPECT_EQ(back.trace_id, ev.trace_id);
  EXPECT_EQ(back.span_id, ev.span_id);
  EXPECT_EQ(back.request_id, ev.request_id);
  EXPECT_EQ(back.in_reply_to, ev.in_reply_to);
  EXPECT_EQ(back.payload, ev.payload);
  EXPECT_EQ(back.payload_truncated, ev.payload_truncated);

  // Every kind, with the fields it carries.
  for (int k = 0; k <= static_cast<int>(kind::audience); ++k) {
    trace::event e;
    e.what = static_cast<kind>(k);
    e.seq = 1;
    e.boot = "b0";
    e.ts_ns = 1796040001000001000;
    e.message_id = 5;
    e.last_message_id = 9;
    e.sender = "s";
    e.recipient = "r";
    e.count = 4;
    e.reason = "slow_consumer";
    e.address = "127.0.0.1:1";
    e.identity = "id";
    auto l = trace::format_json(e);
    auto p = trace::parse_json(l);
    ASSERT_TRUE(p.ev) << p.error << "\n" << l;
    EXPECT_EQ(p.ev->what, e.what) << l;
    EXPECT_EQ(p.ev->ts_ns, e.ts_ns) << l;
    EXPECT_EQ(p.ev->seq, e.seq) << l;
    EXPECT_EQ(p.ev->boot, e.boot) << l;
  }
}

} // namespace
