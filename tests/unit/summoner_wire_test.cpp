// The Summoner protocol core (server/src/summoner_wire.hpp): lines in,
// envelopes out; deliveries in, relay lines out. JSON output is checked with
// two other parsers (nlohmann-json and Python's json module).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>
#include <sodium.h>

#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/wire_format.hpp"
#include "envelope_scan.hpp"
#include "summoner_wire.hpp"

using namespace convoke;
using namespace convoke::server::summoner;
using json = nlohmann::json;

namespace {

using result = line_splitter::result;

/// Every event of the splitter after feeding `chunks`, as strings: the line,
/// or "<too_long N>".
std::vector<std::string> split(line_splitter& s, const std::vector<std::string>& chunks) {
  std::vector<std::string> out;
  for (auto& c : chunks) {
    s.append(c.data(), c.size());
    std::string_view line;
    for (auto r = s.next(line); r != result::none; r = s.next(line))
      out.push_back(r == result::line ? std::string{line}
                                      : "<too_long " + std::to_string(s.too_long_size()) + ">");
    s.compact();
  }
  return out;
}

using lines = std::vector<std::string>;

// -- line splitter -------------------------------------------------------------

TEST(SummonerSplitter, LinesAcrossAndWithinReads) {
  line_splitter s{100};
  EXPECT_EQ(split(s, {"hel", "lo\nwor", "ld\n"}), (lines{"hello", "world"}));
  EXPECT_EQ(split(s, {"a\nb\nc\n\n"}), (lines{"a", "b", "c", ""}));
  EXPECT_EQ(s.buffered(), 0u);
  std::string_view last;
  EXPECT_FALSE(s.take_last(last));
}

TEST(SummonerSplitter, CrLfAndLoneCr) {
  line_splitter s{100};
  EXPECT_EQ(split(s, {"a\r\n", "b\r", "\n", "c\rd\n", "\r\r\n", "\r\n"}),
            (lines{"a", "b", "c\rd", "\r", ""}));
}

TEST(SummonerSplitter, LastLineWithoutNewline) {
  line_splitter s{100};
  EXPECT_EQ(split(s, {"one\ntw", "o"}), (lines{"one"}));
  EXPECT_EQ(s.buffered(), 3u);
  std::string_view last;
  ASSERT_TRUE(s.take_last(last));
  EXPECT_EQ(last, "two");
  EXPECT_FALSE(s.take_last(last));
}

TEST(SummonerSplitter, LineOfExactlyMaxLineIsKept) {
  line_splitter s{5};
  EXPECT_EQ(split(s, {"12345\n", "123456\n", "ok\n"}), (lines{"12345", "<too_long 6>", "ok"}));
  EXPECT_FALSE(s.discarding());
  std::string_view last;
  line_splitter t{5};
  split(t, {"12345"});
  ASSERT_TRUE(t.take_last(last));
  EXPECT_EQ(last, "12345");
}

TEST(SummonerSplitter, TooLongLineReportedOnceAndDiscardedUnbuffered) {
  line_splitter s{1000};
  EXPECT_EQ(split(s, {"first\n"}), (lines{"first"}));
  std::string chunk(64 * 1024, 'x');
  size_t too_long = 0;
  size_t fed = 0;
  while (fed < 10 * 1024 * 1024) {
    s.append(chunk.data(), chunk.size());
    fed += chunk.size();
    std::string_view line;
    for (auto r = s.next(line); r != result::none; r = s.next(line)) {
      ASSERT_EQ(r, result::too_long);
      ++too_long;
      EXPECT_GT(s.too_long_size(), s.max_line());
    }
    s.compact();
    EXPECT_LE(s.buffered(), s.max_line() + 1);
    EXPECT_TRUE(s.discarding());
  }
  EXPECT_EQ(too_long, 1u);
  std::string_view last;
  EXPECT_FALSE(s.take_last(last));
  EXPECT_EQ(split(s, {"tail of it\nnext line\n"}), (lines{"next line"}));
  EXPECT_FALSE(s.discarding());
  EXPECT_EQ(split(s, {"again\n"}), (lines{"again"}));
}

TEST(SummonerSplitter, TooLongLineInOneReadAmongOthers) {
  line_splitter s{10};
  EXPECT_EQ(split(s, {"a\n" + std::string(30, 'y') + "\nb\n" + std::string(11, 'z') + "\r\nc"}),
            (lines{"a", "<too_long 30>", "b", "<too_long 12>"}));
  std::string_view last;
  ASSERT_TRUE(s.take_last(last));
  EXPECT_EQ(last, "c");
}

TEST(SummonerSplitter, TooLongCountsEveryByteSeenAndKeepsOrder) {
  line_splitter s{10};
  // Appended twice before next(): the cut line is still reported in order,
  // with all of its bytes counted.
  std::string a = "ok\n" + std::string(25, 'a');
  std::string b = std::string(5, 'a') + "\nafter\n";
  s.append(a.data(), a.size());
  s.append(b.data(), b.size());
  EXPECT_LE(s.buffered(), 3u + 11u + 7u);
  std::string_view line;
  ASSERT_EQ(s.next(line), result::line);
  EXPECT_EQ(line, "ok");
  ASSERT_EQ(s.next(line), result::too_long);
  EXPECT_EQ(s.too_long_size(), 30u);
  ASSERT_EQ(s.next(line), result::line);
  EXPECT_EQ(line, "after");
  EXPECT_EQ(s.next(line), result::none);
}

TEST(SummonerSplitter, TooLongLineEndingAtEofGivesNoLastLine) {
  line_splitter s{4};
  EXPECT_EQ(split(s, {"abcdefgh"}), (lines{"<too_long 8>"}));
  EXPECT_EQ(split(s, {"ijk"}), lines{});
  std::string_view last;
  EXPECT_FALSE(s.take_last(last));
}

TEST(SummonerSplitter, ByteByByteEqualsOneRead) {
  // The same events, except that a too-long line is reported as soon as it
  // is too long: with the bytes seen so far.
  std::string input = "alpha\r\n\nbeta gamma\n" + std::string(40, 'q') + "\nx\r\ry\n\r";
  line_splitter whole{16};
  EXPECT_EQ(split(whole, {input}), (lines{"alpha", "", "beta gamma", "<too_long 40>", "x\r\ry"}));
  line_splitter bytes{16};
  std::vector<std::string> chunks;
  for (char c : input)
    chunks.emplace_back(1, c);
  EXPECT_EQ(split(bytes, chunks), (lines{"alpha", "", "beta gamma", "<too_long 17>", "x\r\ry"}));
  std::string_view last;
  ASSERT_TRUE(bytes.take_last(last));
  EXPECT_EQ(last, "\r");
}

// -- classification ------------------------------------------------------------

constexpr std::string_view sdk_line
  = R"({"_version": "1.3.0", "_payload": {"msg": "hi"}, "_type": {"msg": "str"}})";

TEST(SummonerClassify, Text) {
  for (std::string_view s : {"",
                             "hello",
                             "héllo ☃",
                             "{",
                             "[1,]",
                             "{\"a\":}",
                             "01",
                             "1.",
                             "-",
                             ".5",
                             "1e",
                             "tru",
                             "nul",
                             "\"unterminated",
                             "{'a': 1}",
                             "[1] [2]",
                             "NaN",
                             "Infinity",
                             "\"tab\there\"",
                             "{\"a\" 1}",
                             "\"\\x\"",
                             "\"\\ud800\"",
                             "\"\\udc00\"",
                             "\"\\ud800\\u0041\"",
                             "\"\\u12\""}) {
    auto m = classify(s);
    EXPECT_EQ(m.kind, line_kind::text) << s;
    EXPECT_EQ(m.payload, s);
  }
}

TEST(SummonerClassify, JsonValuesOfEveryKind) {
  for (std::string_view s :
       {"0", "-0", "12", "-3.25e+10", "1E-2", "true", "false", "null", "\"\"", "\"a\\\"b\\\\\"",
        "\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\"", "\"héllo ☃\"", "[]", "{}", " [ 1 , 2 ] ",
        "\t{\"a\": [true, null, {\"b\": -1.5}]}\r", R"({"x": 1, "y": [1,2]})", "[[[[[]]]]]"}) {
    auto m = classify(s);
    EXPECT_EQ(m.kind, line_kind::json) << s;
    EXPECT_EQ(m.payload, s);
    EXPECT_TRUE(is_json(s));
  }
}

TEST(SummonerClassify, SdkTypedEnvelope) {
  auto m = classify(sdk_line);
  ASSERT_EQ(m.kind, line_kind::typed);
  EXPECT_EQ(m.version, "1.3.0");
  EXPECT_EQ(m.payload, R"({"msg": "hi"})");
  EXPECT_EQ(m.type, R"({"msg": "str"})");

  auto scalar = classify(R"({"_version": "1.3.0", "_payload": "hi", "_type": "str"})");
  ASSERT_EQ(scalar.kind, line_kind::typed);
  EXPECT_EQ(scalar.payload, "\"hi\"");
  EXPECT_EQ(scalar.type, "\"str\"");
  auto nested = classify(
    R"({"_version": "2.0.0-rc.1+b5", "_payload": [1, {"a": null}], "_type": ["int", {"a": "null"}]})");
  ASSERT_EQ(nested.kind, line_kind::typed);
  EXPECT_EQ(nested.version, "2.0.0-rc.1+b5");
  EXPECT_EQ(nested.payload, R"([1, {"a": null}])");
}

TEST(SummonerClassify, NearMissesAreJson) {
  for (std::string_view s : {
         R"({"_payload": {"msg": "hi"}, "_version": "1.3.0", "_type": {"msg": "str"}})",
         R"({"_version":"1.3.0","_payload":{"msg":"hi"},"_type":{"msg":"str"}})",
         R"({"_version": "1.3.0",  "_payload": {"msg": "hi"}, "_type": {"msg": "str"}})",
         R"({"_version": "1.3.0", "_payload": {"msg": "hi"}, "_type": {"msg": "str"} })",
         R"( {"_version": "1.3.0", "_payload": {"msg": "hi"}, "_type": {"msg": "str"}})",
         R"({"_version": "1.3.0", "_payload": {"msg": "hi"}, "_type": {"msg": "str"}, "x": 1})",
         R"({"_version": "1.3.0", "_payload": {"msg": "hi"}})",
         R"({"_version": "1 3", "_payload": 1, "_type": "int"})",
         R"({"_version": "1.3\u0030", "_payload": 1, "_type": "int"})",
         R"({"_version": "", "_payload": 1, "_type": "int"})",
         R"({"_version": 1, "_payload": 1, "_type": "int"})",
       }) {
    EXPECT_EQ(classify(s).kind, line_kind::json) << s;
  }
  // Broken JSON in the typed shape is text.
  EXPECT_EQ(classify(R"({"_version": "1.3.0", "_payload": {"msg": }, "_type": "str"})").kind,
            line_kind::text);
  EXPECT_EQ(classify(R"({"_version": "1.3.0", "_payload": 1, "_type": "str"}})").kind,
            line_kind::text);
}

TEST(SummonerClassify, DeepNestingIsTextWithoutRecursion) {
  std::string deep(10000, '[');
  EXPECT_EQ(classify(deep).kind, line_kind::text);
  deep += std::string(10000, ']');
  EXPECT_EQ(classify(deep).kind, line_kind::text);
  EXPECT_FALSE(is_json(deep));
  std::string ok = std::string(256, '[') + std::string(256, ']');
  EXPECT_TRUE(is_json(ok));
  std::string over = std::string(257, '[') + std::string(257, ']');
  EXPECT_FALSE(is_json(over));
  std::string objects;
  for (int i = 0; i < 5000; ++i)
    objects += "{\"a\":";
  EXPECT_EQ(classify(objects + "1" + std::string(5000, '}')).kind, line_kind::text);
}

TEST(SummonerClassify, RebuildTypedIsByteExact) {
  for (
    std::string_view s : std::initializer_list<std::string_view>{
      sdk_line, R"({"_version": "1.3.0", "_payload": "h\u00e9llo \"x\"", "_type": "str"})",
      R"({"_version": "1.3.0", "_payload": {"a": [1, 2.5, true, null]}, "_type": {"a": ["int", "float", "bool", "null"]}})"}) {
    auto m = classify(s);
    ASSERT_EQ(m.kind, line_kind::typed) << s;
    std::string out = "prefix:";
    rebuild_typed(out, m.version, m.payload, m.type);
    EXPECT_EQ(out, "prefix:" + std::string{s});
  }
}

// -- envelope frames ---------------------------------------------------------------

v1::Envelope decode_envelope(const std::vector<char>& frame, size_t at = 0) {
  EXPECT_GE(frame.size(), at + proto::header_size);
  auto len = proto::read_header(frame.data() + at);
  EXPECT_EQ(len, frame.size() - at - proto::header_size);
  std::string_view body{frame.data() + at + proto::header_size, len};
  v1::Frame f;
  EXPECT_EQ(proto::decode_frame(body, f), proto::frame_error::none);
  EXPECT_TRUE(f.has_envelope());
  v1::Frame g;
  EXPECT_TRUE(g.ParseFromArray(body.data(), static_cast<int>(body.size())));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(f, g));
  server::envelope_view v;
  EXPECT_TRUE(server::scan_envelope_frame(body, v)) << "the relay's fast path must take it";
  EXPECT_EQ(v.route, f.envelope().route());
  EXPECT_EQ(v.payload, f.envelope().payload());
  EXPECT_EQ(v.sent_ns, f.envelope().sent_unix_nanos());
  return f.envelope();
}

TEST(SummonerEnvelope, FieldNumbersAreTheSchemas) {
  // summoner_wire.cpp writes and reads these through the generated constants;
  // check the descriptor agrees with the shape it relies on.
  auto d = v1::Envelope::descriptor();
  EXPECT_EQ(d->FindFieldByName("route")->number(), v1::Envelope::kRouteFieldNumber);
  EXPECT_EQ(d->FindFieldByName("payload")->number(), v1::Envelope::kPayloadFieldNumber);
  EXPECT_EQ(d->FindFieldByName("content_type")->number(), v1::Envelope::kContentTypeFieldNumber);
  EXPECT_EQ(d->FindFieldByName("sent_unix_nanos")->number(),
            v1::Envelope::kSentUnixNanosFieldNumber);
  auto headers = d->FindFieldByName("headers");
  ASSERT_TRUE(headers->is_map());
  EXPECT_EQ(headers->message_type()->FindFieldByName("key")->number(), 1);
  EXPECT_EQ(headers->message_type()->FindFieldByName("value")->number(), 2);
}

TEST(SummonerEnvelope, TextLine) {
  std::vector<char> out{'x', 'y'};
  append_envelope_frame(out, classify("héllo"), "summoner", "127.0.0.1:35586",
                        1'700'000'000'123'456'789);
  auto e = decode_envelope(out, 2);
  EXPECT_EQ(e.route(), "summoner");
  EXPECT_EQ(e.payload(), "héllo");
  EXPECT_EQ(e.content_type(), text_content_type);
  EXPECT_EQ(e.sent_unix_nanos(), 1'700'000'000'123'456'789);
  ASSERT_EQ(e.headers_size(), 1);
  EXPECT_EQ(e.headers().at(std::string{header_remote_addr}), "127.0.0.1:35586");
  EXPECT_TRUE(e.recipient().empty());
}

TEST(SummonerEnvelope, JsonAndEmptyAndNegativeTime) {
  std::vector<char> out;
  append_envelope_frame(out, classify(R"({"x": 1})"), "a.b", "[::1]:9", -5);
  auto e = decode_envelope(out);
  EXPECT_EQ(e.payload(), R"({"x": 1})");
  EXPECT_EQ(e.content_type(), json_content_type);
  EXPECT_EQ(e.sent_unix_nanos(), -5);
  std::vector<char> empty;
  append_envelope_frame(empty, classify(""), "summoner", "1.2.3.4:5", 0);
  auto f = decode_envelope(empty);
  EXPECT_EQ(f.payload(), "");
  EXPECT_EQ(f.content_type(), text_content_type);
}

TEST(SummonerEnvelope, TypedLine) {
  std::vector<char> out;
  append_envelope_frame(out, classify(sdk_line), "summoner", "10.0.0.5:4000", 42);
  auto e = decode_envelope(out);
  EXPECT_EQ(e.payload(), R"({"msg": "hi"})");
  EXPECT_EQ(e.content_type(), json_content_type);
  ASSERT_EQ(e.headers_size(), 3);
  EXPECT_EQ(e.headers().at(std::string{header_remote_addr}), "10.0.0.5:4000");
  EXPECT_EQ(e.headers().at(std::string{header_version}), "1.3.0");
  EXPECT_EQ(e.headers().at(std::string{header_type}), R"({"msg": "str"})");
}

TEST(SummonerEnvelope, LargePayloadLengths) {
  std::string big(300'000, 'b');
  std::vector<char> out;
  append_envelope_frame(out, classify(big), "summoner", "1.2.3.4:5", 1);
  EXPECT_EQ(decode_envelope(out).payload(), big);
}

// -- JSON strings and relay lines ----------------------------------------------------

TEST(SummonerJson, StringEscaping) {
  struct {
    std::string in;
    std::string out;
  } cases[] = {
    {"", R"("")"},
    {"plain", R"("plain")"},
    {"q\"b\\s/", R"("q\"b\\s/")"},
    {"\n\r\t\b\f", R"("\n\r\t\b\f")"},
    {std::string("\0\x01\x1f x", 5), R"("\u0000\u0001\u001f x")"},
    {"\x7f", "\"\x7f\""},
    {"héllo ☃ 😀", "\"héllo ☃ 😀\""},
    {"\xe2\x80\xa8", "\"\xe2\x80\xa8\""},
  };
  for (auto& c : cases) {
    std::string out = "<";
    append_json_string(out, c.in);
    EXPECT_EQ(out, "<" + c.out);
    EXPECT_EQ(json_string_size(c.in), c.out.size());
    EXPECT_EQ(json::parse(c.out).get<std::string>(), c.in);
  }
  std::string every;
  for (int c = 0; c < 128; ++c)
    every.push_back(static_cast<char>(c));
  std::string out;
  append_json_string(out, every);
  EXPECT_EQ(out.size(), json_string_size(every));
  EXPECT_EQ(json::parse(out).get<std::string>(), every);
}

TEST(SummonerJson, RelayLine) {
  std::string out;
  append_relay_line(out, "127.0.0.1:35586", "hello");
  EXPECT_EQ(out, "{\"remote_addr\": \"127.0.0.1:35586\", \"content\": \"hello\"}\n");
  EXPECT_EQ(relay_line_size("127.0.0.1:35586", "hello"), out.size());
  out.clear();
  append_relay_line(out, "a", R"({"x": 1, "y": [1,2]})");
  EXPECT_EQ(out, "{\"remote_addr\": \"a\", \"content\": \"{\\\"x\\\": 1, \\\"y\\\": [1,2]}\"}\n");
  for (std::string content : {std::string{}, std::string("\0\x1f\"\\\n", 5), std::string("é☃")}) {
    std::string line;
    append_relay_line(line, "[::1]:1", content);
    EXPECT_EQ(relay_line_size("[::1]:1", content), line.size());
    auto j = json::parse(line);
    EXPECT_EQ(j["content"], content);
    EXPECT_EQ(j["remote_addr"], "[::1]:1");
  }
}

// -- deliveries ------------------------------------------------------------------------

/// Envelope bytes (generated classes: an independent encoder).
std::string envelope_bytes(std::string_view payload, std::string_view content_type,
                           std::vector<std::pair<std::string, std::string>> headers = {}) {
  v1::Envelope e;
  e.set_route("summoner");
  e.set_payload(std::string{payload});
  e.set_content_type(std::string{content_type});
  for (auto& [k, v] : headers)
    (*e.mutable_headers())[k] = v;
  return e.SerializeAsString();
}

void add_delivery(std::vector<char>& frames, std::string_view envelope, uint64_t id,
                  std::string_view sender) {
  server::append_delivery_frame(frames, envelope, id, sender, 1'700'000'000'000'000'000 + id);
}

std::string_view view(const std::vector<char>& v) {
  return {v.data(), v.size()};
}

TEST(SummonerDelivery, ReadDeliveryFields) {
  std::vector<char> frames;
  add_delivery(frames,
               envelope_bytes("p", "text/plain",
                              {{std::string{header_remote_addr}, "1.2.3.4:5"},
                               {std::string{header_version}, "1.3.0"},
                               {std::string{header_type}, "\"str\""},
                               {"other", "x"}}),
               77, "bob");
  delivery_fields d;
  ASSERT_TRUE(
    read_delivery({frames.data() + proto::header_size, frames.size() - proto::header_size}, d));
  EXPECT_EQ(d.message_id, 77u);
  EXPECT_EQ(d.sender, "bob");
  EXPECT_EQ(d.payload, "p");
  EXPECT_EQ(d.content_type, "text/plain");
  EXPECT_EQ(d.remote_addr, "1.2.3.4:5");
  EXPECT_EQ(d.version, "1.3.0");
  EXPECT_EQ(d.type, "\"str\"");

  // Not Delivery frames.
  v1::Frame notice;
  notice.mutable_notice()->set_code("x");
  EXPECT_FALSE(read_delivery(notice.SerializeAsString(), d));
  EXPECT_FALSE(read_delivery("", d));
  EXPECT_FALSE(read_delivery("\x4a\x05\x0a", d)); // truncated
  v1::Frame no_envelope;
  no_envelope.mutable_delivery()->set_sender("bob");
  EXPECT_FALSE(read_delivery(no_envelope.SerializeAsString(), d));
}

TEST(SummonerDelivery, RenderRunOfFrames) {
  auto typed = classify(sdk_line);
  std::vector<char> frames;
  // 1: a typed line from a Summoner client, relayed exactly.
  std::vector<char> from_summoner;
  append_envelope_frame(from_summoner, typed, "summoner", "127.0.0.1:35586", 5);
  server::envelope_view v;
  ASSERT_TRUE(server::scan_envelope_frame(
    {from_summoner.data() + proto::header_size, from_summoner.size() - proto::header_size}, v));
  add_delivery(frames, v.envelope, 1, "summoner@127.0.0.1:35586");
  // 2: text from a Convoke agent (no remote_addr: its name).
  add_delivery(frames, envelope_bytes("héllo \"☃\"\n\t\x01", "text/plain"), 2, "alice");
  // 3: JSON from a Convoke agent.
  add_delivery(frames, envelope_bytes(R"({"x": [1, 2]})", "application/json"), 3, "alice");
  // 4: binary.
  std::string binary("\xff\x00\xfe\x80 ok", 7);
  add_delivery(frames, envelope_bytes(binary, "application/octet-stream"), 4, "carol");
  // 5, 6: too large for the line limit.
  add_delivery(frames, envelope_bytes(std::string(2000, 'z'), "text/plain"), 5, "alice");
  add_delivery(frames, envelope_bytes(std::string(400, '\x01'), "text/plain"), 6, "alice");
  // 7: a last small one.
  add_delivery(frames, envelope_bytes("", "text/plain"), 7, "dave");

  std::string out = "kept\n";
  std::string scratch;
  auto r = render_deliveries(view(frames), 1000, out, scratch);
  EXPECT_EQ(r.lines, 5u);
  EXPECT_EQ(r.too_large, 2u);
  EXPECT_EQ(r.first_too_large, 5u);
  EXPECT_EQ(r.last_too_large, 6u);
  EXPECT_EQ(r.malformed, 0u);

  std::vector<std::string> got;
  std::string_view rest{out};
  while (!rest.empty()) {
    auto nl = rest.find('\n');
    ASSERT_NE(nl, std::string_view::npos);
    got.emplace_back(rest.substr(0, nl + 1));
    rest.remove_prefix(nl + 1);
  }
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[0], "kept\n");
  // The receiving Summoner client sees exactly what the sending one sent.
  std::string expected_line;
  append_relay_line(expected_line, "127.0.0.1:35586", sdk_line);
  EXPECT_EQ(got[1], expected_line);
  auto j1 = json::parse(got[1]);
  EXPECT_EQ(j1["content"], sdk_line);
  EXPECT_EQ(json::parse(j1["content"].get<std::string>())["_payload"]["msg"], "hi");

  auto j2 = json::parse(got[2]);
  EXPECT_EQ(j2["remote_addr"], "alice");
  EXPECT_EQ(j2["content"], "héllo \"☃\"\n\t\x01");
  EXPECT_EQ(json::parse(got[3])["content"], R"({"x": [1, 2]})");

  auto j4 = json::parse(got[4]);
  EXPECT_EQ(j4["remote_addr"], "carol");
  auto inner = json::parse(j4["content"].get<std::string>());
  EXPECT_EQ(inner["content_type"], "application/octet-stream");
  auto b64 = inner["base64"].get<std::string>();
  std::string decoded(b64.size(), '\0');
  size_t decoded_size = 0;
  ASSERT_EQ(sodium_base642bin(reinterpret_cast<unsigned char*>(decoded.data()), decoded.size(),
                              b64.data(), b64.size(), nullptr, &decoded_size, nullptr,
                              sodium_base64_VARIANT_ORIGINAL),
            0);
  decoded.resize(decoded_size);
  EXPECT_EQ(decoded, binary);

  EXPECT_EQ(got[5], "{\"remote_addr\": \"dave\", \"content\": \"\"}\n");
}

TEST(SummonerDelivery, LimitIsTheRelayLineSize) {
  std::vector<char> frames;
  add_delivery(frames, envelope_bytes("x\"y", "text/plain"), 9, "ann");
  auto size = relay_line_size("ann", "x\"y");
  std::string out;
  std::string scratch;
  auto fits = render_deliveries(view(frames), size, out, scratch);
  EXPECT_EQ(fits.lines, 1u);
  EXPECT_EQ(out.size(), size);
  out.clear();
  auto over = render_deliveries(view(frames), size - 1, out, scratch);
  EXPECT_EQ(over.lines, 0u);
  EXPECT_EQ(over.too_large, 1u);
  EXPECT_EQ(over.first_too_large, 9u);
  EXPECT_TRUE(out.empty());
}

TEST(SummonerDelivery, TypedHeadersWithBadPartsAreNotRebuilt) {
  // A Convoke agent's envelope with summoner headers that would not make
  // JSON: the payload goes as text.
  std::vector<char> frames;
  add_delivery(
    frames,
    envelope_bytes("not json", "text/plain",
                   {{std::string{header_version}, "1.3.0"}, {std::string{header_type}, "\"str\""}}),
    1, "a");
  add_delivery(
    frames,
    envelope_bytes("1", "application/json",
                   {{std::string{header_version}, "1 3"}, {std::string{header_type}, "\"int\""}}),
    2, "a");
  add_delivery(
    frames,
    envelope_bytes("1", "application/json",
                   {{std::string{header_version}, "2.0"}, {std::string{header_type}, "\"int\""}}),
    3, "a");
  std::string out;
  std::string scratch;
  EXPECT_EQ(render_deliveries(view(frames), sdk_line_limit, out, scratch).lines, 3u);
  EXPECT_EQ(out, "{\"remote_addr\": \"a\", \"content\": \"not json\"}\n"
                 "{\"remote_addr\": \"a\", \"content\": \"1\"}\n"
                 "{\"remote_addr\": \"a\", \"content\": "
                 "\"{\\\"_version\\\": \\\"2.0\\\", \\\"_payload\\\": 1, \\\"_type\\\": "
                 "\\\"int\\\"}\"}\n");
}

TEST(SummonerDelivery, MalformedFramesAreCountedAndSkipped) {
  std::vector<char> frames;
  v1::Frame notice;
  notice.mutable_notice()->set_code("x");
  proto::append_frame(notice, frames);
  add_delivery(frames, envelope_bytes("ok", "text/plain"), 1, "a");
  frames.push_back(0); // a truncated prefix
  std::string out;
  std::string scratch;
  auto r = render_deliveries(view(frames), sdk_line_limit, out, scratch);
  EXPECT_EQ(r.lines, 1u);
  EXPECT_EQ(r.malformed, 2u);
  EXPECT_EQ(out, "{\"remote_addr\": \"a\", \"content\": \"ok\"}\n");
}

TEST(SummonerDelivery, PythonReadsTheRelayLines) {
  // A second JSON implementation: Python's json module, as the SDK uses it.
  std::vector<char> frames;
  std::vector<std::string> contents = {"héllo ☃ 😀", std::string("ctl \0\x01\x1f\x7f end", 13),
                                       "q\"b\\s\r\n\t\b\f", "\xe2\x80\xa8 line separator"};
  for (size_t i = 0; i < contents.size(); ++i)
    add_delivery(frames, envelope_bytes(contents[i], "text/plain"), i + 1, "py");
  std::string out;
  std::string scratch;
  ASSERT_EQ(render_deliveries(view(frames), sdk_line_limit, out, scratch).lines, contents.size());
  auto dir = testing::TempDir();
  auto in_path = dir + "/summoner_lines.txt";
  auto out_path = dir + "/summoner_lines.out";
  std::ofstream(in_path, std::ios::binary) << out;
  auto cmd = "python3 -c 'import json,sys\n"
             "for line in open(sys.argv[1], encoding=\"utf-8\", newline=\"\\n\"):\n"
             "    assert line.endswith(\"\\n\")\n"
             "    m = json.loads(line)\n"
             "    assert list(m) == [\"remote_addr\", \"content\"]\n"
             "    sys.stdout.buffer.write(m[\"content\"].encode(\"utf-8\").hex().encode() + "
             "b\"\\n\")\n' "
             + in_path + " > " + out_path + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream result(out_path);
  for (auto& c : contents) {
    std::string hex;
    ASSERT_TRUE(std::getline(result, hex));
    std::string bytes;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
      bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    EXPECT_EQ(bytes, c);
  }
}

// -- warnings and names ----------------------------------------------------------------

TEST(SummonerWarning, KnownAndOtherCodes) {
  EXPECT_EQ(warning_line("rate_limited", "slow down"), warning_rate_limited);
  EXPECT_EQ(warning_line("idle_timeout", "x"), warning_inactivity);
  EXPECT_EQ(warning_line("shutdown", "x"), warning_shutdown);
  EXPECT_EQ(warning_line("lame_duck", "x"), warning_shutdown);
  EXPECT_EQ(warning_rate_limited,
            "Warning: You are sending messages too quickly. Please slow down.\n");
  EXPECT_EQ(warning_line("line_too_long", "line of 70000 bytes\r\nrefused\n"),
            "Warning: line of 70000 bytes  refused  (line_too_long)\n");
  EXPECT_EQ(warning_line("invalid_utf8", "not UTF-8"), "Warning: not UTF-8 (invalid_utf8)\n");
}

TEST(SummonerNames, RemoteAddrAndDefaultName) {
  EXPECT_EQ(remote_addr("127.0.0.1", 35586), "127.0.0.1:35586");
  EXPECT_EQ(remote_addr("::1", 8888), "[::1]:8888");
  EXPECT_EQ(default_name("127.0.0.1", 35586), "summoner@127.0.0.1:35586");
  EXPECT_EQ(default_name("::1", 8888), "summoner@::1:8888");
  for (auto [ip, port] : {std::pair<std::string, uint16_t>{"255.255.255.255", 65535},
                          {"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535},
                          {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535},
                          {"fe80::1%eth0", 1},
                          {std::string(100, 'a'), 0}}) {
    auto name = default_name(ip, port);
    EXPECT_TRUE(proto::check_agent_name(name)) << name;
    EXPECT_TRUE(name.ends_with(":" + std::to_string(port))) << name;
  }
  EXPECT_EQ(default_name("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 65535),
            "summoner@ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:65535");
}

} // namespace
