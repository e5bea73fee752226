// Structured logs and traces: the JSON forms are valid and keep the fields.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

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

server::trace_event sample_broadcast() {
  server::trace_event ev;
  ev.message_id = 42;
  ev.sender = "alice";
  ev.route = "news";
  ev.count = 3;
  ev.recipients = "bob,carol,dave";
  ev.payload_bytes = 12;
  ev.sent_ns = 1'700'000'000'000'000'000;
  ev.relayed_ns = ev.sent_ns + 85'000;
  ev.trace_id = std::string("\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36", 16);
  return ev;
}

} // namespace

TEST(Trace, TextRecordReadsLikeASentence) {
  auto line = server::format_trace_text(sample_broadcast());
  EXPECT_EQ(line, "2023-11-14T22:13:20.000085Z relay m=42 alice -> * route=news fanout=3 "
                  "to=bob,carol,dave bytes=12 ingress_us=85 "
                  "trace=4bf92f3577b34da6a3ce929d0e0e4736");
  server::trace_event direct;
  direct.message_id = 7;
  direct.sender = "alice";
  direct.recipient = "bob";
  direct.relayed_ns = 1'700'000'000'000'000'000;
  direct.payload = "hi \"there\"";
  EXPECT_EQ(server::format_trace_text(direct),
            R"(2023-11-14T22:13:20.000000Z relay m=7 alice -> bob bytes=0 payload="hi \"there\"")");
}

TEST(Trace, JsonRecordHasAllFields) {
  auto j = json::parse(server::format_trace_json(sample_broadcast()));
  EXPECT_EQ(j["event"], "relay");
  EXPECT_EQ(j["message_id"], 42);
  EXPECT_EQ(j["from"], "alice");
  EXPECT_EQ(j["to"], "*");
  EXPECT_EQ(j["route"], "news");
  EXPECT_EQ(j["fanout"], 3);
  EXPECT_EQ(j["recipients"], (json::array({"bob", "carol", "dave"})));
  EXPECT_EQ(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(j["relayed_unix_nanos"].get<int64_t>() - j["sent_unix_nanos"].get<int64_t>(), 85000);
  EXPECT_FALSE(j.contains("payload")) << "payloads are omitted by default";
  server::trace_event drop;
  drop.what = server::trace_event::kind::dropped;
  drop.message_id = 10;
  drop.last_message_id = 20;
  drop.recipient = "slowpoke";
  drop.count = 11;
  drop.reason = "slow_consumer";
  auto d = json::parse(server::format_trace_json(drop));
  EXPECT_EQ(d["event"], "dropped");
  EXPECT_EQ(d["count"], 11);
  EXPECT_EQ(d["to"], "slowpoke");
}

TEST(Trace, WriterDropsInsteadOfBlockingWhenItsQueueIsFull) {
  char path[] = "/tmp/convoke-trace-XXXXXX";
  close(mkstemp(path));
  auto opened = server::trace_writer::open({path, logging::format::json, 1 << 20, 2, 16});
  ASSERT_TRUE(opened) << opened.error().message();
  auto& w = *opened;
  for (int i = 0; i < 100000; ++i)
    w->push(sample_broadcast());
  w->stop();
  EXPECT_EQ(w->written() + w->dropped(), 100000u);
  EXPECT_GT(w->dropped(), 0u);
  std::ifstream in{path};
  size_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines)
    ASSERT_NO_THROW(json::parse(line));
  EXPECT_EQ(lines, w->written());
  std::remove(path);
}

TEST(Trace, UnwritablePathIsReported) {
  auto w = server::trace_writer::open({"/dev/null/trace.log"});
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
