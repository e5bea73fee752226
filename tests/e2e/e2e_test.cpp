// End to end: the built convoke-server and convoke binaries as separate
// processes, talking over real sockets, stopped with real signals.

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "raw_client.hpp"
#include "sanitizers.hpp"
#include "server_process.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (!line.empty())
      out.push_back(json::parse(line));
  return out;
}

} // namespace

TEST(EndToEnd, HelpVersionAndCheckConfig) {
  process help{{binary("convoke-server"), "--help"}};
  ASSERT_EQ(help.wait(5s), 0);
  for (auto key : {"--listen.port", "--flow.slow-consumer", "--trace.payload-bytes",
                   "CONVOKE_TIMEOUTS_IDLE", "--check-config"})
    EXPECT_NE(help.out().find(key), std::string::npos) << key;
  process version{{binary("convoke-server"), "--version"}};
  ASSERT_EQ(version.wait(5s), 0);
  EXPECT_NE(version.out().find("convoke-server"), std::string::npos);
  process check{{binary("convoke-server"), "--config",
                 CONVOKE_SOURCE_DIR "/deploy/config/convoke-server.toml", "--check-config"}};
  ASSERT_EQ(check.wait(5s), 0) << check.err();
  EXPECT_NE(check.out().find("configuration OK"), std::string::npos);
  process bad{{binary("convoke-server"), "--timeouts.idle", "forever"}};
  ASSERT_EQ(bad.wait(5s), 78);
  EXPECT_NE(bad.err().find("--timeouts.idle: 'forever' is not a duration"), std::string::npos)
    << bad.err();
  process cli_help{{binary("convoke"), "--help"}};
  ASSERT_EQ(cli_help.wait(5s), 0);
  for (auto cmd : {"send", "listen", "chat"})
    EXPECT_NE(cli_help.out().find(cmd), std::string::npos);
}

TEST(EndToEnd, CliAgentsExchangeMessagesAndSeeGoodbyeOnSigterm) {
  server_process srv;
  process bob{{binary("convoke"), "listen", "--server", srv.address(), "--name", "bob", "--json"}};
  process news{{binary("convoke"), "listen", "--server", srv.address(), "--name", "newsdesk",
                "--route", "news", "--json"}};
  ASSERT_TRUE(bob.wait_output("\"event\":\"connected\"", 5s)) << bob.err();
  ASSERT_TRUE(news.wait_output("\"event\":\"connected\"", 5s)) << news.err();
  process to_all{
    {binary("convoke"), "send", "--server", srv.address(), "--name", "alice", "hello everyone"}};
  ASSERT_EQ(to_all.wait(5s), 0) << to_all.err();
  process direct{
    {binary("convoke"), "send", "-s", srv.address(), "-n", "alice", "--to", "bob", "just for bob"}};
  ASSERT_EQ(direct.wait(5s), 0) << direct.err();
  process piped{{binary("convoke"), "send", "-s", srv.address(), "--route", "news"},
                "breaking 1\nbreaking 2\n"};
  ASSERT_EQ(piped.wait(5s), 0) << piped.err();
  process unknown{{binary("convoke"), "send", "-s", srv.address(), "--to", "nobody", "hi"}};
  EXPECT_EQ(unknown.wait(5s), 1) << "an undeliverable message fails the command";
  EXPECT_NE(unknown.err().find("unknown_recipient"), std::string::npos) << unknown.err();

  ASSERT_TRUE(bob.wait_output("breaking 2", 5s)) << bob.out();
  ASSERT_TRUE(news.wait_output("breaking 2", 5s)) << news.out();
  srv.proc->signal(SIGTERM);
  ASSERT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  ASSERT_EQ(bob.wait(5s), 0) << bob.err();
  ASSERT_EQ(news.wait(5s), 0) << news.err();

  std::vector<std::string> bob_payloads;
  bool bob_goodbye = false;
  for (auto& j : json_lines(bob.out())) {
    if (j["event"] == "message")
      bob_payloads.push_back(j["payload"]);
    if (j["event"] == "goodbye" && j["code"] == "shutdown")
      bob_goodbye = true;
  }
  EXPECT_EQ(bob_payloads, (std::vector<std::string>{"hello everyone", "just for bob", "breaking 1",
                                                    "breaking 2"}));
  EXPECT_TRUE(bob_goodbye) << bob.out();
  std::vector<std::string> news_payloads;
  bool news_goodbye = false;
  for (auto& j : json_lines(news.out())) {
    if (j["event"] == "message") {
      news_payloads.push_back(j["payload"]);
      EXPECT_EQ(j["route"], "news");
    }
    news_goodbye = news_goodbye || j["event"] == "goodbye";
  }
  EXPECT_EQ(news_payloads, (std::vector<std::string>{"breaking 1", "breaking 2"}));
  EXPECT_TRUE(news_goodbye);

  // One trace record per relayed message, with ids, sender and fan-out.
  auto trace = srv.trace();
  std::vector<json> relays;
  for (auto& t : trace)
    if (t["event"] == "relay")
      relays.push_back(t);
  ASSERT_EQ(relays.size(), 4u) << srv.proc->err();
  EXPECT_EQ(relays[0]["from"], "alice");
  EXPECT_EQ(relays[0]["fanout"], 1); // bob only: newsdesk listens to "news" only
  EXPECT_EQ(relays[1]["to"], "bob");
  EXPECT_EQ(relays[2]["fanout"], 2);
  for (size_t i = 1; i < relays.size(); ++i)
    EXPECT_GT(relays[i]["message_id"], relays[i - 1]["message_id"]);
  bool undeliverable = false;
  for (auto& t : trace)
    undeliverable = undeliverable || (t["event"] == "undeliverable" && t["to"] == "nobody");
  EXPECT_TRUE(undeliverable);
  EXPECT_NE(srv.proc->err().find("received SIGTERM; draining"), std::string::npos);
}

TEST(EndToEnd, SigintAlsoDrainsAndExitsZero) {
  server_process srv;
  raw_client c{srv.port};
  ASSERT_TRUE(c.hello("watcher").has_welcome());
  srv.proc->signal(SIGINT);
  auto bye = c.read_kind(v1::Frame::kGoodbye, 5s);
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(bye->goodbye().code(), "shutdown");
  EXPECT_TRUE(c.wait_closed(5s));
  EXPECT_EQ(srv.proc->wait(10s), 0);
}

TEST(EndToEnd, DrainIsBoundedEvenWhenAClientNeverReads) {
  // A client that stops reading cannot hold the server's exit hostage.
  server_process srv{{"--timeouts.drain", "1s"}};
  raw_client stuck{srv.port};
  ASSERT_TRUE(stuck.hello("stuck").has_welcome());
  raw_client pub{srv.port};
  ASSERT_TRUE(pub.hello("pub").has_welcome());
  std::string burst;
  for (int i = 0; i < 5000; ++i) {
    v1::Frame f;
    f.mutable_envelope()->set_payload(std::string(2000, 'x'));
    proto::append_frame(f, burst);
  }
  ASSERT_TRUE(pub.send_bytes(burst));
  ASSERT_TRUE(pub.ping());
  auto t0 = std::chrono::steady_clock::now();
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
}

TEST(EndToEnd, ServerMemoryStaysBoundedWithAStalledConsumer) {
  // 200 MB are broadcast while one consumer never reads. With a 2 MiB
  // high-water mark the server must cut that consumer off and keep its own
  // memory flat, while a reading consumer gets everything.
  server_process srv{{"--flow.output-high-water", "2MiB", "--trace.enabled", "false"}};
  raw_client stalled{srv.port};
  ASSERT_TRUE(stalled.hello("stalled").has_welcome());
  raw_client reader{srv.port};
  ASSERT_TRUE(reader.hello("reader").has_welcome());
  raw_client pub{srv.port};
  ASSERT_TRUE(pub.hello("pub").has_welcome());
  auto rss_before = rss_kib(srv.proc->pid());
  constexpr int total = 100000;
  constexpr int payload = 2000;
  std::atomic<int> received{0};
  size_t rss_peak = 0;
  std::jthread rx{[&] {
    while (received < total) {
      auto e = reader.read_envelope(10s);
      if (!e)
        return;
      ++received;
    }
  }};
  for (int sent = 0; sent < total;) {
    std::string burst;
    for (int k = 0; k < 50; ++k, ++sent) {
      v1::Frame f;
      f.mutable_envelope()->set_client_seq(static_cast<uint64_t>(sent));
      f.mutable_envelope()->set_payload(std::string(payload, 'm'));
      proto::append_frame(f, burst);
    }
    ASSERT_TRUE(pub.send_bytes(burst));
    while (sent - received > 500) // stay a bounded distance ahead of the reader
      std::this_thread::yield();
    if (sent % 5000 == 0)
      rss_peak = std::max(rss_peak, rss_kib(srv.proc->pid()));
  }
  rx.join();
  EXPECT_EQ(received.load(), total);
  EXPECT_TRUE(stalled.wait_closed(10s)) << "the stalled consumer was not cut off";
  RecordProperty("server_rss_before_kib", std::to_string(rss_before));
  RecordProperty("server_rss_peak_kib", std::to_string(rss_peak));
  if (!sanitized_build) { // ASan: quarantine and padding
    EXPECT_LT(rss_peak, rss_before + 64 * 1024)
      << "server RSS grew from " << rss_before << " KiB to " << rss_peak << " KiB";
  }
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0);
  EXPECT_NE(srv.proc->err().find("slow consumer disconnected agent=stalled"), std::string::npos)
    << srv.proc->err();
}

TEST(EndToEnd, ChatSendsBroadcastsDirectAndRouteMessagesFromStdin) {
  server_process srv;
  process bob{{binary("convoke"), "listen", "-s", srv.address(), "-n", "bob", "--json"}};
  ASSERT_TRUE(bob.wait_output("\"event\":\"connected\"", 5s)) << bob.err();
  process alice{{binary("convoke"), "chat", "-s", srv.address(), "-n", "alice"},
                "hello all\n/to bob psst\n/route news breaking\n/help\n/quit\n"};
  ASSERT_EQ(alice.wait(5s), 0) << alice.err();
  EXPECT_NE(alice.err().find("help: commands"), std::string::npos) << alice.err();
  ASSERT_TRUE(bob.wait_output("breaking", 5s)) << bob.out();
  std::vector<std::pair<std::string, std::string>> got; // payload, to
  for (auto& j : json_lines(bob.out()))
    if (j["event"] == "message") {
      EXPECT_EQ(j["from"], "alice");
      got.emplace_back(j["payload"], j["to"]);
    }
  EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{
                   {"hello all", "*"}, {"psst", "bob"}, {"breaking", "*"}}));
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0);
}

TEST(EndToEnd, ConfigurationErrorsAreFoundByCheckConfigAndExit78) {
  // The audit: --check-config accepted unwritable trace/log files; at run
  // time a bad trace file exited 1 (systemd then restarts it every 2 s)
  // while a bad log file exited 78; a log file in a missing directory made
  // the server create that directory; -5 was reported as "'-'".
  temp_dir dir;
  auto missing = dir.file("missing/sub");
  struct bad_case {
    std::vector<std::string> args;
    std::string says;
  };
  std::vector<bad_case> cases = {
    {{"--trace.file", missing + "/trace.log"}, "does not exist"},
    {{"--log.file", missing + "/server.log"}, "does not exist"},
    {{"--trace.file", "/proc/version"}, "/proc/version"},
    {{"--log.file", dir.path}, "is a directory"},
  };
  for (auto& c : cases) {
    for (bool check : {true, false}) {
      std::vector<std::string> argv{binary("convoke-server"), "--listen.port", "0"};
      argv.insert(argv.end(), c.args.begin(), c.args.end());
      if (check)
        argv.push_back("--check-config");
      process p{argv};
      EXPECT_EQ(p.wait(10s), 78) << testing::PrintToString(argv) << "\n" << p.err();
      EXPECT_NE(p.err().find(c.says), std::string::npos) << p.err();
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("missing"))) << "a directory was created";
  std::ofstream{dir.file("neg.toml")} << "[limits]\nmax-agents = -5\n";
  process neg{{binary("convoke-server"), "--config", dir.file("neg.toml"), "--check-config"}};
  EXPECT_EQ(neg.wait(10s), 78);
  EXPECT_NE(neg.err().find("-5"), std::string::npos) << neg.err();
  process ok{{binary("convoke-server"), "--trace.file", dir.file("t.log"), "--log.file",
              dir.file("s.log"), "--check-config"}};
  EXPECT_EQ(ok.wait(10s), 0) << ok.err();
  EXPECT_FALSE(std::filesystem::exists(dir.file("t.log"))) << "--check-config created a file";
}

TEST(EndToEnd, RelayedFramesDecodeWithAnotherProtobufLibrary) {
  // What a receiver gets must be readable by any protobuf library: captured
  // frames are decoded by Debian's python3-protobuf from code that protoc
  // generates now, and every field is checked.
  const std::string python = "/usr/bin/python3";
  if (!std::filesystem::exists(python))
    GTEST_SKIP() << "needs " << python << " with python3-protobuf";
  server_process srv;
  raw_client alice{srv.port};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  raw_client bob{srv.port};
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient("bob");
  e->set_route("weather.eu");
  e->set_payload(std::string("\x00\xff\x80 binary \xc3\x28", 14)); // not UTF-8
  e->set_content_type("application/octet-stream");
  (*e->mutable_headers())["traceparent"]
    = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  e->set_trace_id(
    std::string("\x0a\xf7\x65\x19\x16\xcd\x43\xdd\x84\x48\xeb\x21\x1c\x80\x31\x9c", 16));
  e->set_sent_unix_nanos(1'764'460'800'000'000'000);
  e->set_client_seq(41);
  e->set_request_id(0x8000'0000'0000'0001ull);
  e->set_in_reply_to(7);
  e->set_sender("mallory");  // spoofed: ignored, the Delivery names alice
  e->set_message_id(999999); // spoofed
  ASSERT_TRUE(alice.send(f));
  v1::Frame broadcast;
  broadcast.mutable_envelope()->set_payload("to everyone");
  ASSERT_TRUE(alice.send(broadcast));
  std::string captured;
  for (int i = 0; i < 2;) {
    auto raw = bob.read_raw(5s);
    ASSERT_TRUE(raw.has_value()) << "frame " << i << " did not arrive";
    v1::Frame probe;
    ASSERT_EQ(proto::decode_frame(std::string_view{*raw}.substr(proto::header_size), probe),
              proto::frame_error::none);
    if (probe.has_heartbeat())
      continue;
    captured += *raw;
    ++i;
  }
  auto hex = [](const std::string& s) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 15]);
    }
    return out;
  };
  json expected = json::array();
  expected.push_back(
    {{"sender", "alice"},
     {"message_id_positive", true},
     {"relayed_unix_nanos_positive", true},
     {"envelope_hex", hex(e->SerializeAsString())},
     {"envelope",
      {{"recipient", "bob"},
       {"route", "weather.eu"},
       {"payload", hex(e->payload())},
       {"content_type", "application/octet-stream"},
       {"headers", {{"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}},
       {"trace_id", hex(e->trace_id())},
       {"sent_unix_nanos", 1'764'460'800'000'000'000LL},
       {"client_seq", 41},
       {"request_id", 0x8000'0000'0000'0001ull},
       {"in_reply_to", 7}}}});
  expected.push_back({{"sender", "alice"},
                      {"message_id_positive", true},
                      {"envelope", {{"recipient", ""}, {"payload", hex("to everyone")}}}});
  temp_dir dir;
  std::ofstream{dir.file("frames.bin"), std::ios::binary} << captured;
  std::ofstream{dir.file("expected.json")} << expected.dump();
  process protoc{{"/usr/bin/protoc", "--proto_path=" CONVOKE_SOURCE_DIR "/proto",
                  "--python_out=" + dir.path, "convoke/v1/wire.proto"}};
  ASSERT_EQ(protoc.wait(30s), 0) << protoc.err();
  process check{{python, CONVOKE_SOURCE_DIR "/tests/interop/decode_delivery.py", dir.path,
                 dir.file("frames.bin"), dir.file("expected.json")}};
  ASSERT_EQ(check.wait(30s), 0) << check.out() << check.err();
  EXPECT_NE(check.out().find("checked 2 frames"), std::string::npos) << check.out();
}

TEST(EndToEnd, ExtremeDurationsAndUnresolvableHostsAreConfigurationErrors) {
  // Found by review: durations beyond ~292 years overflowed the nanosecond
  // deadlines (an idle check spun, SIGTERM exited 1), those beyond 49.7 days
  // wrapped in Welcome's 32-bit milliseconds; an unresolvable listen.host
  // passed --check-config and then exited 1 (systemd restarted it forever).
  for (auto key : {"--timeouts.idle", "--timeouts.drain", "--timeouts.heartbeat-interval"}) {
    process p{{binary("convoke-server"), key, "3000000h", "--check-config"}};
    EXPECT_EQ(p.wait(10s), 78) << key << ": " << p.err();
    EXPECT_NE(p.err().find("longer than the limit"), std::string::npos) << p.err();
  }
  process ok{{binary("convoke-server"), "--timeouts.idle", "576h", "--check-config"}}; // 24 days
  EXPECT_EQ(ok.wait(10s), 0) << ok.err();
  for (bool check : {true, false}) {
    std::vector<std::string> argv{binary("convoke-server"), "--listen.host", "no-such-host.invalid",
                                  "--listen.port", "0"};
    if (check)
      argv.push_back("--check-config");
    process p{argv};
    EXPECT_EQ(p.wait(20s), 78) << p.err();
    EXPECT_NE(p.err().find("listen.host"), std::string::npos) << p.err();
  }
}
