// `convoke trace` over files: rotated sets, cut and foreign lines, filters,
// following across rotations, and the renderings (Mermaid and HTML parsed
// back).

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "convoke/common/text.hpp"
#include "process.hpp"
#include "trace_command.hpp"
#include "trace_files.hpp"
#include "trace_view.hpp"
#include "wait.hpp"

namespace {

using namespace convoke;
using namespace convoke::cli;
using convoke::test::eventually;
using convoke::test::temp_dir;

constexpr int64_t t0 = 1796040000000000000; // 2026-12-01T...
const std::string trace_a = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string trace_b = "0af7651916cd43dd8448eb211c80319c";

/// A JSON trace line with the contract's keys.
std::string line(const std::string& event, uint64_t seq, int64_t ms, const std::string& rest) {
  return fmt::format(R"({{"ts":"{}","event":"{}","seq":{},"boot":"00aa00aa00aa00aa"{}{}}})",
                     format_timestamp(t0 + ms * 1'000'000), event, seq, rest.empty() ? "" : ",",
                     rest);
}

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

void append(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::app);
  f << text;
}

/// A conversation: alice asks bob (request 7), bob answers, alice
/// broadcasts to bob and carol on route news.eu (audience 1), the copy for
/// carol is dropped; dave talks in another trace.
std::string conversation_lines() {
  std::string out;
  out += line("audience", 1, 0, R"("audience":1,"recipients":["bob","carol"])") + "\n";
  out += line("relay", 2, 1,
              R"("message_id":1,"from":"alice","to":"bob","count":1,"bytes":5,)"
              R"("sent_unix_nanos":)"
                + std::to_string(t0 + 900'000) + R"(,"accepted_unix_nanos":)"
                + std::to_string(t0 + 1'000'000) + R"(,"trace_id":")" + trace_a
                + R"(","request_id":7)")
         + "\n";
  out += line("written", 3, 2,
              R"("message_id":1,"to":"bob","accepted_unix_nanos":)" + std::to_string(t0 + 1'000'000)
                + R"(,"trace_id":")" + trace_a + "\"")
         + "\n";
  out += line("relay", 4, 5,
              R"("message_id":2,"from":"bob","to":"alice","count":1,"bytes":3,)"
              R"("accepted_unix_nanos":)"
                + std::to_string(t0 + 5'000'000) + R"(,"trace_id":")" + trace_a
                + R"(","in_reply_to":7)")
         + "\n";
  out += line("relay", 5, 6,
              R"("message_id":3,"from":"dave","to":"*","route":"ops.x","count":1,"fanout":1,)"
              R"("bytes":2,"trace_id":")"
                + trace_b + "\"")
         + "\n";
  out += line("relay", 6, 8,
              R"("message_id":4,"from":"alice","to":"*","route":"news.eu","count":2,)"
              R"("fanout":2,"audience":1,"bytes":4,"trace_id":")"
                + trace_a + "\"")
         + "\n";
  out += line("dropped", 7, 9,
              R"("message_id":4,"last_message_id":4,"to":"carol","count":1,)"
              R"("reason":"slow_consumer")")
         + "\n";
  return out;
}

struct collected {
  std::vector<trace::event> events;
  std::vector<std::string> problems;
  trace_reader reader{
    [this](trace::event& ev, const line_origin&, std::string_view) { events.push_back(ev); },
    [this](const read_problem& p) { problems.push_back(p.to_string()); }};
};

// -- files -------------------------------------------------------------------------

TEST(TraceFiles, RotatedNamesAsSpdlog) {
  EXPECT_EQ(rotated_name("t.json", 0), "t.json");
  EXPECT_EQ(rotated_name("t.json", 1), "t.1.json");
  EXPECT_EQ(rotated_name("/var/log/convoke/trace.json", 12), "/var/log/convoke/trace.12.json");
  EXPECT_EQ(rotated_name("trace", 2), "trace.2");
  EXPECT_EQ(rotated_name("/d.x/trace", 1), "/d.x/trace.1");
  EXPECT_EQ(rotated_name("/d/.hidden", 1), "/d/.hidden.1");
  EXPECT_EQ(rotated_name("a.tar.gz", 3), "a.tar.3.gz");
  EXPECT_EQ(rotated_name("t.", 1), "t..1");
}

TEST(TraceFiles, RotatedSetOldestFirst) {
  temp_dir dir;
  auto base = dir.file("t.json");
  // seq 1..4 spread over t.10.json (oldest) ... t.json (newest).
  write(dir.file("t.10.json"), line("gap", 1, 0, R"("count":1,"reason":"budget")") + "\n");
  write(dir.file("t.2.json"), line("gap", 2, 1, R"("count":2,"reason":"budget")") + "\n");
  write(dir.file("t.1.json"), line("gap", 3, 2, R"("count":3,"reason":"budget")") + "\n");
  write(base, line("gap", 4, 3, R"("count":4,"reason":"budget")") + "\n");
  write(dir.file("t.x.json"), "not part of the set\n");
  auto set = rotated_set(base);
  ASSERT_EQ(set.size(), 4u);
  EXPECT_EQ(set[0], dir.file("t.10.json"));
  EXPECT_EQ(set[3], base);
  collected c;
  c.reader.read_all({base});
  EXPECT_TRUE(c.problems.empty()) << c.problems.front();
  ASSERT_EQ(c.events.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(c.events[i].seq, i + 1);
}

TEST(TraceFiles, CutForeignAndTextLinesAreNamedAndSkipped) {
  temp_dir dir;
  auto base = dir.file("t.json");
  std::string text = line("joined", 1, 0, R"("agent":"alice")") + "\n";
  text += "2026-12-01T00:00:00.000000Z relay m=1 alice -> bob bytes=3\n"; // text format
  text += "\n";                                                           // blank: ignored
  text += "\x01\x02garbage\xff\n";
  text += line("left", 2, 1, R"("agent":"alice")") + "\n";
  text += R"({"ts":"2026-12-01T00:00:00Z","event":"relay","from":"al)"; // cut, no newline
  write(base, text);
  collected c;
  c.reader.read_all({base});
  ASSERT_EQ(c.events.size(), 2u);
  EXPECT_EQ(c.events[1].what, trace::kind::left);
  ASSERT_EQ(c.problems.size(), 3u);
  EXPECT_EQ(c.problems[0].rfind(base + ":2: not JSON", 0), 0u) << c.problems[0];
  EXPECT_NE(c.problems[0].find("a text trace line?"), std::string::npos) << c.problems[0];
  EXPECT_EQ(c.problems[1].rfind(base + ":4: not JSON", 0), 0u) << c.problems[1];
  EXPECT_EQ(c.problems[2], base + ":6: last line cut short (no newline at its end): skipped");
  EXPECT_EQ(c.reader.problems(), 3u);
}

TEST(TraceFiles, MissingFileAndHugeLine) {
  temp_dir dir;
  collected c;
  c.reader.read_all({dir.file("nope.json")});
  ASSERT_EQ(c.problems.size(), 1u);
  EXPECT_EQ(c.problems[0], dir.file("nope.json") + ": no such file (nor rotated files of it)");

  auto base = dir.file("t.json");
  std::string text(max_trace_line_bytes + 10, 'x');
  text += "\n" + line("left", 2, 1, R"("agent":"a")") + "\n";
  write(base, text);
  collected d;
  d.reader.read_all({base});
  ASSERT_EQ(d.problems.size(), 1u);
  EXPECT_NE(d.problems[0].find(":1: line longer than"), std::string::npos) << d.problems[0];
  ASSERT_EQ(d.events.size(), 1u);
}

TEST(TraceFiles, AudiencesResolveBroadcastsAndFiltersMatch) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, conversation_lines());
  collected c;
  c.reader.read_all({base});
  ASSERT_TRUE(c.problems.empty());
  ASSERT_EQ(c.events.size(), 7u);
  EXPECT_EQ(c.events[5].recipients, (std::vector<std::string>{"bob", "carol"}));

  auto count = [&](const trace_filter& f) {
    size_t n = 0;
    for (auto& ev : c.events)
      n += f.matches(ev) ? 1 : 0;
    return n;
  };
  trace_filter all;
  EXPECT_EQ(count(all), 6u); // the audience definition is never shown
  trace_filter carol;
  carol.agents = {"carol"}; // a recipient of the broadcast (resolved) + the drop
  EXPECT_EQ(count(carol), 2u);
  trace_filter routes;
  routes.routes = {"news.*"};
  EXPECT_EQ(count(routes), 1u);
  routes.routes = {">"};
  EXPECT_EQ(count(routes), 2u);
  trace_filter by_trace;
  by_trace.trace_id = *from_hex(trace_b);
  EXPECT_EQ(count(by_trace), 1u);
  trace_filter since;
  since.since_ns = t0 + 6'000'000;
  EXPECT_EQ(count(since), 3u);
}

TEST(TraceFiles, ParseSince) {
  std::string error;
  EXPECT_EQ(parse_since("5m", t0, error), t0 - 300'000'000'000);
  EXPECT_EQ(parse_since("2026-11-30T12:00:00Z", t0, error),
            parse_timestamp("2026-11-30T12:00:00Z"));
  EXPECT_FALSE(parse_since("yesterday", t0, error));
  EXPECT_NE(error.find("'yesterday' is neither a duration"), std::string::npos);
}

TEST(TraceFiles, FollowReadsAppendedLinesAcrossRotation) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, line("gap", 1, 0, R"("count":1)") + "\n");
  std::mutex mtx;
  std::vector<uint64_t> seen;
  std::vector<std::string> problems;
  std::atomic<bool> stop{false};
  std::atomic<int> waits{0};
  trace_reader reader(
    [&](trace::event& ev, const line_origin&, std::string_view) {
      std::lock_guard g{mtx};
      seen.push_back(ev.seq);
    },
    [&](const read_problem& p) {
      std::lock_guard g{mtx};
      problems.push_back(p.to_string());
    });
  std::thread follower{[&] {
    reader.follow(
      base,
      [&](std::chrono::milliseconds d) {
        ++waits;
        std::this_thread::sleep_for(std::min(d, std::chrono::milliseconds{20}));
        return stop.load();
      },
      std::chrono::milliseconds{20});
  }};
  auto saw = [&](size_t n) {
    return eventually([&] {
      std::lock_guard g{mtx};
      return seen.size() >= n;
    });
  };
  EXPECT_TRUE(saw(1));
  // A line written in two pieces is one event.
  auto l2 = line("gap", 2, 1, R"("count":2)");
  append(base, l2.substr(0, 10));
  int w = waits.load();
  EXPECT_TRUE(eventually([&] { return waits.load() > w + 2; })); // it polled the half line
  append(base, l2.substr(10) + "\n");
  EXPECT_TRUE(saw(2));
  // Rotation as spdlog does it: the last lines land in the file just before
  // it is renamed; the new file gets the next ones.
  append(base, line("gap", 3, 2, R"("count":3)") + "\n");
  std::filesystem::rename(base, dir.file("t.1.json"));
  write(base, line("gap", 4, 3, R"("count":4)") + "\n");
  EXPECT_TRUE(saw(4));
  // Truncation (copytruncate): read again from the start.
  write(base, line("gap", 5, 4, "") + "\n"); // shorter than what was read

  EXPECT_TRUE(saw(5));
  stop = true;
  follower.join();
  std::lock_guard g{mtx};
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

// -- commands --------------------------------------------------------------------------

TEST(TraceCommand, ListExitCodes) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, conversation_lines());
  trace_list_args args;
  args.files = {base};
  args.filter.agents = {"dave"};
  std::ostringstream out, err;
  EXPECT_EQ(run_trace_list(args, out, err, {}), trace_exit::ok);
  EXPECT_EQ(err.str(), "");
  EXPECT_NE(out.str().find(" relay m=3 dave -> * route=ops.x fanout=1 bytes=2 trace=" + trace_b),
            std::string::npos)
    << out.str();
  auto listed = out.str();
  EXPECT_EQ(std::count(listed.begin(), listed.end(), '\n'), 1);

  // A written record names its recipient only.
  trace_list_args written;
  written.files = {base};
  written.filter.agents = {"bob"};
  std::ostringstream wout, werr;
  EXPECT_EQ(run_trace_list(written, wout, werr, {}), trace_exit::ok);
  EXPECT_NE(wout.str().find(" written m=1 -> bob relay_us=1000 trace=" + trace_a),
            std::string::npos)
    << wout.str();

  args.json = true;
  std::ostringstream jout, jerr;
  EXPECT_EQ(run_trace_list(args, jout, jerr, {}), trace_exit::ok);
  auto j = nlohmann::json::parse(jout.str());
  EXPECT_EQ(j["from"], "dave");

  append(base, "garbage\n");
  std::ostringstream out2, err2;
  EXPECT_EQ(run_trace_list(args, out2, err2, {}), trace_exit::unreadable);
  EXPECT_NE(err2.str().find(base + ":8: not JSON"), std::string::npos) << err2.str();

  trace_list_args none;
  none.files = {dir.file("missing.json")};
  std::ostringstream out3, err3;
  EXPECT_EQ(run_trace_list(none, out3, err3, {}), trace_exit::failure);
}

TEST(TraceCommand, ShowUnknownTraceId) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, conversation_lines());
  std::ostringstream out, err;
  EXPECT_EQ(run_trace_show({base}, "00000000000000000000000000000001", show_format::text, out, err),
            trace_exit::not_found);
  EXPECT_NE(err.str().find("no event with trace id 00000000000000000000000000000001"),
            std::string::npos);
  std::ostringstream out2, err2;
  EXPECT_EQ(run_trace_show({base}, "xyz", show_format::text, out2, err2), trace_exit::usage);
}

conversation conversation_a(const std::string& base) {
  conversation_builder b(*from_hex(trace_a));
  trace_reader r1([&](trace::event& ev, const line_origin&, std::string_view) { b.first_pass(ev); },
                  {});
  r1.read_all({base});
  trace_reader r2([&](trace::event& ev, const line_origin&, std::string_view) { b.add(ev); }, {});
  r2.read_all({base});
  EXPECT_TRUE(b.found());
  return b.finish();
}

TEST(TraceView, ConversationArrows) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, conversation_lines());
  auto c = conversation_a(base);
  EXPECT_EQ(c.agents, (std::vector<std::string>{"alice", "bob", "carol"}));
  ASSERT_EQ(c.arrows.size(), 4u);
  EXPECT_EQ(c.arrows[0].from, "alice");
  EXPECT_EQ(c.arrows[0].to, "bob");
  EXPECT_EQ(c.arrows[0].request_id, 7u);
  EXPECT_EQ(c.arrows[0].ingress_ns, 100'000);
  EXPECT_EQ(c.arrows[0].delivery_ns, 1'000'000); // written 1 ms after acceptance
  EXPECT_EQ(c.arrows[1].in_reply_to, 7u);
  EXPECT_EQ(c.arrows[1].reply_after_ns, 4'000'000);
  EXPECT_EQ(c.arrows[2].to, "bob");
  EXPECT_EQ(c.arrows[2].fanout, 2u);
  EXPECT_EQ(c.arrows[3].to, "carol");
  EXPECT_EQ(c.arrows[3].what, trace::kind::dropped);
  EXPECT_EQ(c.arrows[3].reason, "slow_consumer");

  auto text = render_sequence_text(c);
  EXPECT_NE(text.find("alice         bob           carol"), std::string::npos) << text;
  EXPECT_NE(text.find("|------------>|"), std::string::npos) << text;
  EXPECT_NE(text.find("|<------------|"), std::string::npos) << text;
  EXPECT_NE(text.find("|--------------------------x|"), std::string::npos) << text;
  EXPECT_NE(text.find("reply to 7 after 4.000 ms"), std::string::npos) << text;
}

TEST(TraceView, RepliesWithoutTheTraceIdAreLinkedByRequestId) {
  temp_dir dir;
  auto base = dir.file("t.json");
  std::string text;
  text += line("relay", 1, 1,
               R"("message_id":1,"from":"alice","to":"bob","count":1,"trace_id":")" + trace_a
                 + R"(","request_id":7)")
          + "\n";
  // Another agent's request 7 (to carol) and its reply: not this conversation.
  text
    += line("relay", 2, 2, R"("message_id":2,"from":"dave","to":"carol","count":1,"request_id":7)")
       + "\n";
  text
    += line("relay", 3, 3, R"("message_id":3,"from":"carol","to":"dave","in_reply_to":7)") + "\n";
  // bob's reply: no trace id (not every agent copies it).
  text += line("relay", 4, 4, R"("message_id":4,"from":"bob","to":"alice","in_reply_to":7)") + "\n";
  text += line("dropped", 5, 5,
               R"("message_id":4,"last_message_id":4,"to":"alice","count":1,"reason":"shutdown")")
          + "\n";
  write(base, text);
  auto c = conversation_a(base);
  EXPECT_EQ(c.agents, (std::vector<std::string>{"alice", "bob"}));
  ASSERT_EQ(c.arrows.size(), 2u);
  EXPECT_EQ(c.arrows[1].message_id, 4u);
  EXPECT_EQ(c.arrows[1].reply_after_ns, 3'000'000);
  EXPECT_EQ(c.arrows[1].what, trace::kind::dropped);
  EXPECT_EQ(c.arrows[1].reason, "shutdown");
}

TEST(TraceView, MermaidParsesBack) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, conversation_lines());
  auto c = conversation_a(base);
  auto text = render_mermaid(c);
  std::istringstream in(text);
  std::string l;
  std::getline(in, l);
  EXPECT_EQ(l, "sequenceDiagram");
  std::map<std::string, std::string> participants;
  std::vector<std::tuple<std::string, std::string, std::string, std::string>> arrows;
  std::regex participant(R"(^    participant (a\d+) as (.+)$)");
  std::regex arrow(R"(^    (a\d+)(->>|-->>|-x|-\))(a\d+): (.*)$)");
  std::regex comment(R"(^    %% .*$)");
  while (std::getline(in, l)) {
    std::smatch m;
    if (std::regex_match(l, m, participant))
      participants[m[1]] = m[2];
    else if (std::regex_match(l, m, arrow))
      arrows.emplace_back(participants.at(m[1]), m[2], participants.at(m[3]), m[4]);
    else
      EXPECT_TRUE(std::regex_match(l, comment)) << "unexpected line: " << l;
  }
  EXPECT_EQ(participants.size(), 3u);
  ASSERT_EQ(arrows.size(), 4u);
  EXPECT_EQ(std::get<0>(arrows[0]), "alice");
  EXPECT_EQ(std::get<1>(arrows[0]), "->>");
  EXPECT_EQ(std::get<2>(arrows[0]), "bob");
  EXPECT_NE(std::get<3>(arrows[0]).find("request 7"), std::string::npos);
  EXPECT_EQ(std::get<0>(arrows[1]), "bob");
  EXPECT_EQ(std::get<1>(arrows[1]), "-->>"); // a reply
  EXPECT_EQ(std::get<2>(arrows[1]), "alice");
  EXPECT_EQ(std::get<1>(arrows[2]), "-)"); // a broadcast copy
  EXPECT_EQ(std::get<0>(arrows[3]), "alice");
  EXPECT_EQ(std::get<1>(arrows[3]), "-x"); // dropped
  EXPECT_EQ(std::get<2>(arrows[3]), "carol");
  EXPECT_NE(std::get<3>(arrows[3]).find("dropped: slow_consumer"), std::string::npos);
}

/// Runs tests/support/check_trace_html.py on `html`.
nlohmann::json check_html(const std::string& html) {
  temp_dir dir;
  auto page = dir.file("page.html");
  write(page, html);
  auto out_path = dir.file("out.json");
  auto cmd = fmt::format("python3 {}/tests/support/check_trace_html.py {} > {} 2>&1",
                         CONVOKE_SOURCE_DIR, page, out_path);
  int rc = std::system(cmd.c_str());
  auto out = test::read_file(out_path);
  EXPECT_EQ(rc, 0) << out;
  if (rc != 0)
    return {};
  return nlohmann::json::parse(out);
}

TEST(TraceView, HtmlParsesBackAsSvgTimeline) {
  temp_dir dir;
  auto base = dir.file("t.json");
  // An agent name that needs escaping in HTML and XML.
  auto text = conversation_lines();
  text = std::regex_replace(text, std::regex("\"carol\""), R"("c<a>&'r\"ol")");
  write(base, text);
  auto c = conversation_a(base);
  auto j = check_html(render_html(c));
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["lifelines"], nlohmann::json::parse(R"(["alice","bob","c<a>&'r\"ol"])"));
  ASSERT_EQ(j["messages"].size(), 4u);
  EXPECT_EQ(j["messages"][0], nlohmann::json::parse(R"(["alice","bob",1,"relay"])"));
  EXPECT_EQ(j["messages"][1], nlohmann::json::parse(R"(["bob","alice",2,"relay"])"));
  EXPECT_EQ(j["messages"][3], nlohmann::json::parse(R"(["alice","c<a>&'r\"ol",4,"dropped"])"));
  EXPECT_EQ(j["urls"], nlohmann::json::array()) << j.dump();
  EXPECT_EQ(j["title"], "Conversation " + trace_a);
}

TEST(TraceView, HtmlOfHostileNamesStaysWellFormed) {
  conversation c;
  c.trace_id = "\x01\x02";
  c.agents = {"a\x01\xff\xfe", "]]></svg><script>", "x"};
  conversation_arrow a;
  a.from = c.agents[0];
  a.to = c.agents[1];
  a.message_id = 1;
  a.route = "r\"<&";
  c.arrows.push_back(a);
  a.to = a.from; // to itself
  c.arrows.push_back(a);
  auto j = check_html(render_html(c));
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["lifelines"].size(), 3u);
  EXPECT_EQ(j["messages"].size(), 2u);
  EXPECT_EQ(j["lifelines"][1], "]]></svg><script>");
}

TEST(TraceCommand, Stats) {
  temp_dir dir;
  auto base = dir.file("t.json");
  write(base, conversation_lines());
  std::ostringstream out, err;
  EXPECT_EQ(run_trace_stats({base}, std::chrono::seconds{0}, true, out, err), trace_exit::ok);
  auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["events"], 6);
  EXPECT_EQ(j["agents"]["alice"]["sent"], 2);
  EXPECT_EQ(j["agents"]["bob"]["received"], 2);
  EXPECT_EQ(j["agents"]["carol"]["received"], 1);
  EXPECT_EQ(j["agents"]["carol"]["dropped"], 1);
  EXPECT_EQ(j["routes"]["news.eu"]["deliveries"], 2);
  EXPECT_EQ(j["routes"]["(none)"]["messages"], 2);
  // A window of the last 4 ms: from 5 ms on (bob's reply, dave, the
  // broadcast and its drop).
  std::ostringstream out2, err2;
  EXPECT_EQ(run_trace_stats({base}, std::chrono::milliseconds{4}, true, out2, err2),
            trace_exit::ok);
  auto w = nlohmann::json::parse(out2.str());
  EXPECT_EQ(w["events"], 4);
  EXPECT_EQ(w["agents"]["alice"]["sent"], 1);
  EXPECT_DOUBLE_EQ(w["agents"]["alice"]["sent_per_second"].get<double>(), 250.0);
  std::ostringstream out3, err3;
  EXPECT_EQ(run_trace_stats({base}, std::chrono::seconds{60}, false, out3, err3), trace_exit::ok);
  EXPECT_NE(out3.str().find("news.eu"), std::string::npos);
}

} // namespace
