// End to end: `convoke trace` (the real binary) over JSON trace files
// written by a real convoke-server with agents talking: listing with
// filters, following across rotations, `trace show` as Mermaid and HTML
// (parsed back), `trace stats`, and the exit codes for unreadable lines and
// unknown trace ids.

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const std::string trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string trace_raw{"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36", 16};

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (!line.empty())
      out.push_back(json::parse(line));
  return out;
}

v1::Frame envelope(const std::string& to, const std::string& payload, const std::string& route,
                   uint64_t request_id, uint64_t in_reply_to) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient(to);
  e->set_payload(payload);
  e->set_route(route);
  e->set_trace_id(trace_raw);
  e->set_request_id(request_id);
  e->set_in_reply_to(in_reply_to);
  return f;
}

/// The trace files' text so far (rotated set, oldest first).
std::string trace_text(const server_process& srv) {
  std::string all;
  for (int i = 20; i >= 1; --i)
    all += read_file(srv.dir.file("trace." + std::to_string(i) + ".jsonl"));
  return all + read_file(srv.dir.file("trace.jsonl"));
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto p = text.find(what); p != std::string::npos; p = text.find(what, p + 1))
    ++n;
  return n;
}

struct talking_server {
  server_process srv{{"--trace.max-file-bytes", "64KiB", "--trace.max-files", "20"}};
  raw_client alice{srv.port};
  raw_client bob{srv.port};
  raw_client carol{srv.port};
  raw_client dave{srv.port};

  /// Subscriptions keep the filler traffic (carol on "chatter") away from
  /// alice, bob and carol, who read what the conversation sends them.
  talking_server() {
    EXPECT_TRUE(alice.hello("alice", {"alice.only"}).has_welcome());
    EXPECT_TRUE(bob.hello("bob", {"news.>"}).has_welcome());
    EXPECT_TRUE(carol.hello("carol", {"news.>"}).has_welcome());
    EXPECT_TRUE(dave.hello("dave", {"chatter"}).has_welcome());
  }

  /// alice asks bob (request 7), bob answers, alice tells the news to
  /// everyone on news.eu: one conversation (trace_hex).
  void conversation() {
    ASSERT_TRUE(alice.send(envelope("bob", "ping?", "", 7, 0)));
    auto got = bob.read_envelope(5s);
    ASSERT_TRUE(got);
    ASSERT_EQ(got->request_id(), 7u);
    ASSERT_TRUE(bob.send(envelope("alice", "pong", "", 0, 7)));
    ASSERT_TRUE(alice.read_envelope(5s));
    ASSERT_TRUE(alice.send(envelope("", "news!", "news.eu", 0, 0)));
    ASSERT_TRUE(bob.read_envelope(5s));
    ASSERT_TRUE(carol.read_envelope(5s));
    // The trace writer is asynchronous: wait until it wrote the three.
    ASSERT_TRUE(eventually([&] { return count_of(trace_text(srv), trace_hex) >= 3; }, 10s))
      << trace_text(srv);
  }
};

} // namespace

TEST(TraceCli, ListsFiltersAndRendersAConversationFromARealServer) {
  talking_server t;
  // Enough other traffic for rotations (64 KiB files), then the conversation.
  for (int i = 0; i < 400; ++i)
    ASSERT_TRUE(t.carol.send_envelope("", "filler " + std::to_string(i), "chatter"));
  ASSERT_TRUE(t.carol.ping(5s));
  t.conversation();
  auto base = t.srv.dir.file("trace.jsonl");
  ASSERT_TRUE(std::filesystem::exists(t.srv.dir.file("trace.1.jsonl")))
    << "expected a rotation: the test wants a rotated set";

  // All events, oldest first across the rotated files: message ids grow.
  process all{{binary("convoke"), "trace", "--file", base, "--json"}};
  ASSERT_EQ(all.wait(20s), 0) << all.err();
  uint64_t last_id = 0;
  size_t relays = 0;
  for (auto& j : json_lines(all.out()))
    if (j["event"] == "relay") {
      ++relays;
      EXPECT_GT(j["message_id"].get<uint64_t>(), last_id);
      last_id = j["message_id"];
    }
  EXPECT_EQ(relays, 403u);

  // --agent: bob's events only (sender, recipient, or a broadcast's receiver).
  process bobs{{binary("convoke"), "trace", "--file", base, "--agent", "bob"}};
  ASSERT_EQ(bobs.wait(20s), 0) << bobs.err();
  EXPECT_NE(bobs.out().find(" alice -> bob "), std::string::npos) << bobs.out();
  EXPECT_NE(bobs.out().find(" bob -> alice "), std::string::npos) << bobs.out();
  EXPECT_EQ(bobs.out().find("filler"), std::string::npos);

  // --route with a pattern, --trace.
  process news{{binary("convoke"), "trace", "--file", base, "--route", "news.*", "--json"}};
  ASSERT_EQ(news.wait(20s), 0) << news.err();
  auto news_lines = json_lines(news.out());
  ASSERT_EQ(news_lines.size(), 1u) << news.out();
  EXPECT_EQ(news_lines[0]["route"], "news.eu");
  process traced{{binary("convoke"), "trace", "--file", base, "--trace", trace_hex, "--json"}};
  ASSERT_EQ(traced.wait(20s), 0) << traced.err();
  for (auto& j : json_lines(traced.out()))
    EXPECT_EQ(j["trace_id"], trace_hex);

  // trace show --format mermaid, parsed back.
  process mermaid{
    {binary("convoke"), "trace", "show", trace_hex, "--file", base, "--format", "mermaid"}};
  ASSERT_EQ(mermaid.wait(20s), 0) << mermaid.err();
  std::map<std::string, std::string> participants;
  std::vector<std::tuple<std::string, std::string, std::string>> arrows;
  std::istringstream in{mermaid.out()};
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "sequenceDiagram");
  std::regex participant(R"(^    participant (a\d+) as (.+)$)");
  std::regex arrow(R"(^    (a\d+)(->>|-->>|-x|-\))(a\d+): .*$)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, participant))
      participants[m[1]] = m[2];
    else if (std::regex_match(line, m, arrow))
      arrows.emplace_back(participants.at(m[1]), m[2], participants.at(m[3]));
  }
  using arrow_t = std::tuple<std::string, std::string, std::string>;
  EXPECT_EQ(arrows, (std::vector<arrow_t>{{"alice", "->>", "bob"},
                                          {"bob", "-->>", "alice"},
                                          {"alice", "-)", "bob"},
                                          {"alice", "-)", "carol"}}))
    << mermaid.out();

  // --format html: a page whose SVG has one lifeline per agent and one
  // arrow per message, and no URL.
  process html{{binary("convoke"), "trace", "show", trace_hex, "--file", base, "--format", "html"}};
  ASSERT_EQ(html.wait(20s), 0) << html.err();
  auto page = t.srv.dir.file("page.html");
  std::ofstream(page) << html.out();
  process check{{"/usr/bin/python3",
                 std::string{CONVOKE_SOURCE_DIR} + "/tests/support/check_trace_html.py", page}};
  ASSERT_EQ(check.wait(20s), 0) << check.out() << check.err();
  auto parsed = json::parse(check.out());
  EXPECT_EQ(parsed["lifelines"], json::parse(R"(["alice","bob","carol"])"));
  EXPECT_EQ(parsed["messages"].size(), 4u);
  EXPECT_EQ(parsed["urls"], json::array());

  // Terminal diagram: the columns and the reply's latency.
  // (The trace id after --file: one value per --file.)
  process text{{binary("convoke"), "trace", "show", "--file", base, trace_hex}};
  ASSERT_EQ(text.wait(20s), 0) << text.err();
  EXPECT_NE(text.out().find("alice         bob           carol"), std::string::npos) << text.out();
  EXPECT_NE(text.out().find("reply to 7 after"), std::string::npos) << text.out();

  // Unknown trace id: exit 4 and a clear message.
  process unknown{
    {binary("convoke"), "trace", "show", "00000000000000000000000000000001", "--file", base}};
  EXPECT_EQ(unknown.wait(20s), 4);
  EXPECT_NE(unknown.err().find("no event with trace id 00000000000000000000000000000001"),
            std::string::npos)
    << unknown.err();

  // stats over everything.
  process stats{{binary("convoke"), "trace", "stats", "--file", base, "--window", "0", "--json"}};
  ASSERT_EQ(stats.wait(20s), 0) << stats.err();
  auto s = json::parse(stats.out());
  EXPECT_EQ(s["agents"]["carol"]["sent"], 400);
  EXPECT_EQ(s["agents"]["alice"]["sent"], 2);
  EXPECT_EQ(s["routes"]["news.eu"]["deliveries"], 2);
  EXPECT_EQ(s["routes"]["chatter"]["messages"], 400);
}

TEST(TraceCli, UnreadableLinesAreNamedSkippedAndSetTheExitCode) {
  talking_server t;
  t.conversation();
  // A copy of the server's file with a text line, garbage and a cut line.
  auto copy = t.srv.dir.file("copy.json");
  {
    std::ofstream out(copy);
    out << read_file(t.srv.dir.file("trace.jsonl"));
    out << "2026-11-30T12:00:00.000000Z relay m=1 alice -> bob bytes=3\n";
    out << "\x7f\x45LF garbage\n";
    out << R"({"ts":"2026-11-30T12:00:00Z","event":"relay","from":"al)";
  }
  auto lines = count_of(read_file(t.srv.dir.file("trace.jsonl")), "\n");
  process p{{binary("convoke"), "trace", "--file", copy}};
  EXPECT_EQ(p.wait(20s), 3);
  EXPECT_NE(p.err().find(copy + ":" + std::to_string(lines + 1) + ": not JSON"), std::string::npos)
    << p.err();
  EXPECT_NE(p.err().find("a text trace line?"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find(copy + ":" + std::to_string(lines + 2) + ": not JSON"), std::string::npos)
    << p.err();
  EXPECT_NE(p.err().find(copy + ":" + std::to_string(lines + 3) + ": last line cut short"),
            std::string::npos)
    << p.err();
  EXPECT_NE(p.out().find(" alice -> bob "), std::string::npos) << "the good lines are shown";

  // A file that is not there at all: exit 1.
  process missing{{binary("convoke"), "trace", "--file", t.srv.dir.file("nope.json")}};
  EXPECT_EQ(missing.wait(20s), 1);
  EXPECT_NE(missing.err().find("nope.json: no such file"), std::string::npos) << missing.err();
}

TEST(TraceCli, FollowSeesNewEventsAcrossRotationsUntilSigterm) {
  talking_server t;
  auto base = t.srv.dir.file("trace.jsonl");
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(base); }, 10s));
  process follow{{binary("convoke"), "trace", "--file", base, "--follow", "--agent", "bob"}};
  // New events, and enough traffic to rotate the file several times.
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 300; ++i)
      ASSERT_TRUE(t.carol.send_envelope("", "filler", "chatter"));
    ASSERT_TRUE(t.alice.send_envelope("bob", "hello bob " + std::to_string(round)));
    ASSERT_TRUE(t.alice.ping(5s));
    ASSERT_TRUE(eventually(
      [&] { return count_of(follow.out(), " alice -> bob ") >= static_cast<size_t>(round + 1); },
      10s))
      << follow.out() << follow.err();
  }
  EXPECT_TRUE(std::filesystem::exists(t.srv.dir.file("trace.2.jsonl")));
  EXPECT_EQ(count_of(follow.out(), " alice -> bob "), 3u);
  EXPECT_EQ(follow.err(), "");
  follow.signal(SIGTERM);
  EXPECT_EQ(follow.wait(10s), 0);
}

TEST(TraceCli, ATextTraceFileGivenByMistakeIsExplained) {
  // The last --trace.format wins: this server writes text traces.
  temp_dir dir;
  auto text_file = dir.file("trace.log");
  server_process srv{{"--trace.format", "text", "--trace.file", text_file}};
  raw_client alice{srv.port};
  raw_client bob{srv.port};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  ASSERT_TRUE(alice.send_envelope("bob", "hi"));
  ASSERT_TRUE(bob.read_envelope(5s));
  ASSERT_TRUE(eventually([&] { return count_of(read_file(text_file), "\n") >= 1; }, 10s));
  process p{{binary("convoke"), "trace", "--file", text_file}};
  EXPECT_EQ(p.wait(20s), 1) << "no line was an event";
  EXPECT_NE(p.err().find(text_file + ":1: not JSON"), std::string::npos) << p.err();
  EXPECT_NE(p.err().find("(a text trace line? convoke trace reads trace.format = json files)"),
            std::string::npos)
    << p.err();
  EXPECT_EQ(p.out(), "");
}

TEST(TraceCli, LiveFromTheServersTapWithFiltersUntilSigterm) {
  server_process srv;
  process watch{{binary("convoke"), "trace", "-s", srv.address(), "--agent", "bob", "--json"}};
  ASSERT_TRUE(watch.wait_output("convoke trace: observing", 10s)) << watch.err();
  raw_client alice{srv.port};
  raw_client bob{srv.port};
  raw_client carol{srv.port};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  ASSERT_TRUE(carol.hello("carol").has_welcome());
  ASSERT_TRUE(alice.send_envelope("carol", "not for the watcher"));
  ASSERT_TRUE(alice.send_envelope("bob", "for bob"));
  ASSERT_TRUE(bob.read_envelope(5s));
  ASSERT_TRUE(
    eventually([&] { return watch.out().find("\"to\":\"bob\"") != std::string::npos; }, 10s))
    << watch.out() << watch.err();
  // A broadcast reaches bob: shown, with its receivers resolved.
  ASSERT_TRUE(carol.send_envelope("", "to everyone"));
  ASSERT_TRUE(bob.read_envelope(5s));
  ASSERT_TRUE(
    eventually([&] { return watch.out().find("\"from\":\"carol\"") != std::string::npos; }, 10s))
    << watch.out();
  watch.signal(SIGTERM);
  EXPECT_EQ(watch.wait(10s), 0) << watch.err();
  bool direct = false;
  bool broadcast = false;
  for (auto& j : json_lines(watch.out())) {
    EXPECT_NE(j["event"], "audience");
    if (j["event"] == "relay" && j["from"] == "alice") {
      EXPECT_EQ(j["to"], "bob") << j.dump(); // not the message to carol
      direct = true;
    }
    if (j["event"] == "relay" && j["from"] == "carol") {
      EXPECT_EQ(j["to"], "*");
      // bob and alice; not the observer (it subscribes to a route nobody uses).
      auto r = j["recipients"].get<std::vector<std::string>>();
      std::sort(r.begin(), r.end());
      EXPECT_EQ(r, (std::vector<std::string>{"alice", "bob"})) << j.dump();
      broadcast = true;
    }
  }
  EXPECT_TRUE(direct);
  EXPECT_TRUE(broadcast);
}

TEST(TraceCli, LiveRefusedFilterIsAnErrorWithTheServersReason) {
  server_process srv;
  process bad{{binary("convoke"), "trace", "-s", srv.address(), "--route", "a..b"}};
  EXPECT_EQ(bad.wait(10s), 1);
  EXPECT_NE(bad.err().find("invalid_filter"), std::string::npos) << bad.err();
}
