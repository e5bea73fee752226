// Structured logs and traces: the JSON forms are valid and keep the fields.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "convoke/common/logging.hpp"
#include "convoke/server/error.hpp"
#include "trace.hpp"

using namespace convoke;
using nlohmann::json;

TEST(Logging, LogfmtMessageBecomesJsonFields) {
  std::string out = "{";
  logging::append_logfmt_as_json(
    out, R"(agent connected agent=alice session=3 role="planner v2" ratio=0.5)");
  out += "}";
  auto j = json::parse(out);
  EXPECT_EQ(j["msg"], "agent connected");
  EXPECT_EQ(j["agent"], "alice");
  EXPECT_EQ(j["session"], 3);
  EXPECT_EQ(j["role"], "planner v2");
  EXPECT_EQ(j["ratio"], "0.5");
}

TEST(Logging, PlainMessagesAndOddInputStayValidJson) {
  for (std::string msg : {"just text", "", "=", "a b=", "x=\"unterminated", "trailing x=1 junk",
                          "weird \x01 bytes \xff k=v"}) {
    std::string out = "{";
    logging::append_logfmt_as_json(out, msg);
    out += "}";
    EXPECT_NO_THROW(json::parse(out)) << out;
  }
}

TEST(Logging, LevelsAndFormatsParse) {
  EXPECT_EQ(logging::parse_level("warn"), spdlog::level::warn);
  EXPECT_FALSE(logging::parse_level("loud"));
  EXPECT_EQ(logging::parse_format("json"), logging::format::json);
  EXPECT_FALSE(logging::parse_format("xml"));
}

namespace {

trace::event sample_broadcast() {
  trace::event ev;
  ev.message_id = 42;
  ev.sender = "alice";
  ev.route = "news";
  ev.count = 3;
  ev.audience = 5;
  ev.payload_bytes = 12;
  ev.sent_ns = 1'700'000'000'000'000'000;
  ev.accepted_ns = ev.sent_ns + 85'000;
  ev.ts_ns = ev.accepted_ns + 2'000;
  ev.seq = 9;
  ev.boot = "00112233aabbccdd";
  ev.trace_id = std::string("\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36", 16);
  return ev;
}

server::record_fields fields_of(const trace::event& ev) {
  server::record_fields f;
  f.what = ev.what;
  f.message_id = ev.message_id;
  f.sender = ev.sender;
  f.recipient = ev.recipient;
  f.route = ev.route;
  f.count = ev.count;
  f.audience = ev.audience;
  f.payload_bytes = ev.payload_bytes;
  f.sent_ns = ev.sent_ns;
  f.accepted_ns = ev.accepted_ns;
  f.ts_ns = ev.ts_ns;
  f.trace_id = ev.trace_id;
  return f;
}

server::trace_writer::options json_file(const std::string& path, uint64_t buffer) {
  server::trace_writer::options o;
  o.file = path;
  o.fmt = logging::format::json;
  o.max_file_bytes = 1ull << 30;
  o.buffer_bytes = buffer;
  return o;
}

} // namespace

TEST(Trace, TextRecordReadsLikeASentence) {
  auto line = trace::format_text(sample_broadcast());
  EXPECT_EQ(line, "2023-11-14T22:13:20.000087Z relay m=42 alice -> * route=news fanout=3 "
                  "audience=5 bytes=12 ingress_us=85 "
                  "trace=4bf92f3577b34da6a3ce929d0e0e4736");
  trace::event direct;
  direct.message_id = 7;
  direct.sender = "alice";
  direct.recipient = "bob";
  direct.ts_ns = 1'700'000'000'000'000'000;
  direct.payload = "hi \"there\"";
  EXPECT_EQ(trace::format_text(direct),
            R"(2023-11-14T22:13:20.000000Z relay m=7 alice -> bob bytes=0 payload="hi \"there\"")");
  trace::event audience;
  audience.what = trace::kind::audience;
  audience.ts_ns = direct.ts_ns;
  audience.audience = 5;
  audience.recipients = {"bob", "carol", "dave"};
  EXPECT_EQ(trace::format_text(audience),
            "2023-11-14T22:13:20.000000Z audience audience=5 agents=3 to=bob,carol,dave");
}

TEST(Trace, JsonRecordHasAllFields) {
  auto j = json::parse(trace::format_json(sample_broadcast()));
  EXPECT_EQ(j["event"], "relay");
  EXPECT_EQ(j["seq"], 9);
  EXPECT_EQ(j["boot"], "00112233aabbccdd");
  EXPECT_EQ(j["message_id"], 42);
  EXPECT_EQ(j["from"], "alice");
  EXPECT_EQ(j["to"], "*");
  EXPECT_EQ(j["route"], "news");
  EXPECT_EQ(j["fanout"], 3);
  EXPECT_EQ(j["audience"], 5);
  EXPECT_EQ(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(j["accepted_unix_nanos"].get<int64_t>() - j["sent_unix_nanos"].get<int64_t>(), 85000);
  EXPECT_FALSE(j.contains("payload")) << "payloads are omitted by default";
  trace::event drop;
  drop.what = trace::kind::dropped;
  drop.message_id = 10;
  drop.last_message_id = 20;
  drop.recipient = "slowpoke";
  drop.count = 11;
  drop.reason = "slow_consumer";
  auto d = json::parse(trace::format_json(drop));
  EXPECT_EQ(d["event"], "dropped");
  EXPECT_EQ(d["count"], 11);
  EXPECT_EQ(d["to"], "slowpoke");
  EXPECT_EQ(d["last_message_id"], 20);
}

TEST(Trace, BinaryRecordsDecodeToTheSameEvent) {
  auto ev = sample_broadcast();
  ev.span_id = "\x01\x02\x03\x04\x05\x06\x07\x08";
  ev.request_id = 3;
  ev.in_reply_to = 2;
  ev.payload = std::string("a\0b", 3);
  ev.payload_truncated = true;
  ev.reason = "why";
  auto f = fields_of(ev);
  f.span_id = ev.span_id;
  f.request_id = ev.request_id;
  f.in_reply_to = ev.in_reply_to;
  f.payload = ev.payload;
  f.payload_truncated = true;
  f.reason = ev.reason;
  std::vector<char> names;
  server::append_name(names, "bob");
  server::append_name(names, "");
  server::append_name(names, "dave");
  f.names = {names.data(), names.size()};
  std::string buf(server::record_size(f), '\0');
  server::encode_record(f, buf.data());
  trace::event back;
  ASSERT_TRUE(server::decode_record(buf, back));
  ev.seq = 0;
  ev.boot.clear();
  ev.recipients = {"bob", "", "dave"};
  EXPECT_EQ(trace::format_json(back), trace::format_json(ev));
  // Anything but a whole record is refused, never read past its end.
  for (size_t cut = 0; cut < buf.size(); ++cut)
    EXPECT_FALSE(server::decode_record(std::string_view{buf}.substr(0, cut), back)) << cut;
  buf[0] = 99; // no such kind
  EXPECT_FALSE(server::decode_record(buf, back));
}

TEST(Trace, APayloadCutAtTheRecordsLimitIsMarkedTruncated) {
  // trace.payload-bytes goes up to 1 MiB; a record holds 64 KiB of a string.
  auto ev = sample_broadcast(); // f views its strings
  auto f = fields_of(ev);
  std::string payload(100000, 'p');
  f.payload = payload;
  f.payload_truncated = false; // the whole payload was within trace.payload-bytes
  std::string buf(server::record_size(f), '\0');
  server::encode_record(f, buf.data());
  trace::event back;
  ASSERT_TRUE(server::decode_record(buf, back));
  EXPECT_LT(back.payload.size(), payload.size());
  EXPECT_TRUE(back.payload_truncated) << "a cut payload must not look whole";
}

TEST(Trace, RecordsLargerThanASmallBufferAllowsAreShortenedNotLost) {
  char path[] = "/tmp/convoke-trace-XXXXXX";
  close(mkstemp(path));
  // trace.buffer's smallest value: 64 KiB, so 16 KiB per record.
  auto opened = server::trace_writer::open(json_file(path, 64 << 10));
  ASSERT_TRUE(opened) << opened.error().message();
  auto& w = *opened;
  std::vector<char> names;
  for (int i = 0; i < 400; ++i) // 400 agents with 60-byte names: 24 KiB of names
    server::append_name(names, fmt::format("{:060}", i));
  server::record_fields def;
  def.what = trace::kind::audience;
  def.audience = 1;
  def.count = 400;
  def.names = {names.data(), names.size()};
  w->record(def);
  auto ev = sample_broadcast(); // f views its strings
  auto f = fields_of(ev);
  f.audience = 1;
  std::string payload(60000, 'p');
  w->set_file_payload_bytes(payload.size()); // trace.payload-bytes = 60000
  f.payload = payload;
  w->record(f);
  w->stop();
  EXPECT_EQ(w->dropped(), 0u);
  std::ifstream in{path};
  std::vector<json> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 2u) << "no gap: the ring was empty";
  EXPECT_EQ(lines[0]["event"], "audience");
  EXPECT_EQ(lines[0]["count"], 400) << "count still says how many agents";
  EXPECT_GT(lines[0]["recipients"].size(), 0u);
  EXPECT_EQ(lines[0]["recipients"][0], fmt::format("{:060}", 0));
  EXPECT_EQ(lines[1]["event"], "relay");
  EXPECT_EQ(lines[1]["payload_truncated"], true);
  EXPECT_GT(lines[1]["payload"].get<std::string>().size(), 0u);
  std::remove(path);
}

TEST(Trace, WriterCountsWhatItCannotTakeAndReportsItAsAGap) {
  char path[] = "/tmp/convoke-trace-XXXXXX";
  close(mkstemp(path));
  // The smallest ring (4 KiB) cannot hold 100,000 records written at once.
  auto opened = server::trace_writer::open(json_file(path, 4096));
  ASSERT_TRUE(opened) << opened.error().message();
  auto& w = *opened;
  auto ev = sample_broadcast();
  auto f = fields_of(ev);
  uint64_t refused = 0;
  for (int i = 0; i < 100000; ++i) {
    f.message_id = static_cast<uint64_t>(i) + 1;
    if (!w->record(f))
      ++refused;
  }
  w->stop();
  EXPECT_GT(w->dropped(), 0u);
  EXPECT_EQ(refused, w->dropped()) << "record() says which records were lost (the router "
                                      "defines an audience again when its definition was)";
  std::ifstream in{path};
  uint64_t relays = 0;
  uint64_t lost = 0;
  uint64_t seq = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line);
    EXPECT_EQ(j["seq"].get<uint64_t>(), ++seq) << "events are numbered without holes";
    if (j["event"] == "relay")
      ++relays;
    else if (j["event"] == "gap") {
      EXPECT_EQ(j["reason"], "trace_buffer_full");
      lost += j["count"].get<uint64_t>();
    }
  }
  EXPECT_EQ(relays + lost, 100000u) << "every record is either written or counted in a gap";
  EXPECT_EQ(lost, w->dropped());
  EXPECT_EQ(seq, w->written());
  std::remove(path);
}

TEST(Trace, FilesRotateUnderTheirSpdlogNamesAndRepeatTheAudiencesTheyUse) {
  EXPECT_EQ(server::rotated_name("/x/t.json", 2), "/x/t.2.json");
  EXPECT_EQ(server::rotated_name("/x/trace", 1), "/x/trace.1");
  EXPECT_EQ(server::rotated_name("/x.d/trace", 1), "/x.d/trace.1");
  EXPECT_EQ(server::rotated_name("/x/.trace", 1), "/x/.trace.1");
  char dir[] = "/tmp/convoke-rotate-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string{dir} + "/t.json";
  auto opts = json_file(path, 1 << 20);
  opts.max_file_bytes = 64 << 10;
  opts.max_files = 3;
  auto opened = server::trace_writer::open(opts);
  ASSERT_TRUE(opened) << opened.error().message();
  auto& w = *opened;
  std::vector<char> names;
  server::append_name(names, "bob");
  server::append_name(names, "carol");
  server::record_fields def;
  def.what = trace::kind::audience;
  def.audience = 1;
  def.count = 2;
  def.names = {names.data(), names.size()};
  w->record(def);
  auto ev = sample_broadcast(); // f views its strings
  auto f = fields_of(ev);
  f.audience = 1;
  for (int i = 0; i < 3000; ++i) { // ~900 KB of JSON: the files rotate several times
    f.message_id = static_cast<uint64_t>(i) + 1;
    w->record(f);
    if (i % 500 == 0)
      ASSERT_TRUE(w->flush(std::chrono::seconds{5}));
  }
  w->stop();
  EXPECT_EQ(w->dropped(), 0u);
  for (uint32_t i = 0; i <= 3; ++i) {
    std::ifstream in{server::rotated_name(path, i)};
    ASSERT_TRUE(in) << server::rotated_name(path, i);
    std::string first;
    std::getline(in, first);
    EXPECT_EQ(json::parse(first)["event"], "audience")
      << "file " << i << " starts with the audience its records refer to";
    EXPECT_EQ(json::parse(first)["recipients"], (json::array({"bob", "carol"})));
    in.seekg(0, std::ios::end);
    EXPECT_LE(static_cast<uint64_t>(in.tellg()), opts.max_file_bytes);
  }
  EXPECT_FALSE(std::ifstream{server::rotated_name(path, 4)}) << "max-files = 3 rotated files";
  // (boot, seq) names one event: a repeated definition is a copy of the
  // original (same seq, same line), never a second event under a relay's seq.
  std::map<uint64_t, std::string> by_seq;
  for (uint32_t i = 0; i <= 3; ++i) {
    std::ifstream in{server::rotated_name(path, i)};
    for (std::string line; std::getline(in, line);) {
      auto seq = json::parse(line)["seq"].get<uint64_t>();
      auto [at, fresh] = by_seq.try_emplace(seq, line);
      EXPECT_TRUE(fresh || at->second == line) << "seq " << seq << ":\n"
                                               << at->second << "\n"
                                               << line;
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Trace, UnwritablePathIsReported) {
  server::trace_writer::options opts;
  opts.file = "/dev/null/trace.log";
  auto w = server::trace_writer::open(opts);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, server::errc::unwritable_file);
  EXPECT_NE(w.error().text.find("/dev/null/trace.log"), std::string::npos) << w.error().text;
}

TEST(Logging, AnUnwritableLogFileReportsTheSystemsErrorCode) {
  logging::options opts;
  opts.file = "/dev/null/server.log"; // a path below a file, whoever runs the test
  auto ok = logging::configure(opts);
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, std::errc::not_a_directory) << ok.error().code.message();
  EXPECT_NE(ok.error().text.find("cannot open log file '/dev/null/server.log'"), std::string::npos)
    << ok.error().text;
}

TEST(Logging, AnUnknownLevelIsAnInvalidArgument) {
  logging::options opts;
  opts.level = "verbose";
  auto ok = logging::configure(opts);
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, std::errc::invalid_argument);
  EXPECT_EQ(ok.error().text, "unknown log level 'verbose'");
}
