// The Summoner compatibility listener (issue 12), in-process: clients that
// behave as the Summoner SDK does on the wire (summoner_client.hpp) talk to
// each other as through the original servers, and to Convoke agents (the
// C++ SDK's blocking_client) both ways; notices become the Warning lines
// Summoner agents know; and where the original servers fail (slow readers,
// oversized relays, invalid UTF-8, quarantine by port) Convoke does not.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

#include "convoke/client/blocking_client.hpp"
#include "convoke/server/config.hpp"
#include "summoner_client.hpp"
#include "test_agent.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

using options = std::vector<std::pair<std::string, std::string>>;

/// An in-process server with the Summoner listener on a free port, plus
/// `extra` keys set as an operator would (set_option: the keys of the
/// contract, not struct fields).
std::unique_ptr<test_server> start(const options& extra = {}) {
  auto cfg = test_config();
  auto ok = server::set_option(cfg, "summoner.listen", "127.0.0.1:0");
  if (!ok)
    throw std::runtime_error(ok.error().message());
  for (auto& [k, v] : extra)
    if (auto r = server::set_option(cfg, k, v); !r)
      throw std::runtime_error(k + ": " + r.error().message());
  return std::make_unique<test_server>(std::move(cfg));
}

uint16_t sport(test_server& srv) {
  return srv.get().summoner_port();
}

/// Waits until `n` agents (Summoner connections included) are registered:
/// a line sent after it reaches all of them.
void wait_agents(test_server& srv, uint64_t n) {
  ASSERT_TRUE(eventually([&] { return srv.stats().agents == n; }))
    << "agents: " << srv.stats().agents << ", expected " << n;
}

/// The agent name the server gives a Summoner connection from 127.0.0.1.
std::string name_of(const summoner_client& c) {
  return "summoner@" + c.local_addr();
}

std::unique_ptr<blocking_client> convoke_agent(test_server& srv, const std::string& name) {
  auto c = std::make_unique<blocking_client>(local_options(srv.port()), name);
  std::string why;
  if (auto ec = c->connect(&why))
    throw std::runtime_error("connect " + name + ": " + why);
  return c;
}

/// `{"remote_addr": "<addr>", "content": <content as a JSON string>}\n`:
/// the relay line as Convoke writes it (raw UTF-8).
size_t relay_size(const std::string& addr, const std::string& content) {
  return nlohmann::json{{"remote_addr", addr}, {"content", content}}.dump().size()
         + 3 /* ", " and ": " twice where nlohmann writes "," and ":" */ + 1 /* \n */;
}

std::string base64_decode(std::string_view in) {
  static const std::string chars
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    if (ch == '=')
      break;
    auto pos = chars.find(ch);
    if (pos == std::string::npos)
      return "<not base64>";
    acc = (acc << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

} // namespace

// -- the client itself ------------------------------------------------------------

TEST(SummonerClient, WritesTypedEnvelopesAsPythonJsonDumps) {
  // Expected bytes from CPython 3: json.dumps(p) of the same dict.
  pyjson p = pyjson::object();
  p["msg"] = "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9d\x84\x9e";
  p["n"] = 3;
  p["x"] = 1.5;
  p["ok"] = true;
  p["nil"] = nullptr;
  p["l"] = pyjson::array({1, "a", pyjson::array({2.0})});
  p["q"] = "a\"b\\c\n\t\x01\x7f/";
  EXPECT_EQ(py_json_dumps(p),
            R"({"msg": "h\u00e9llo \u2603 \ud834\udd1e", "n": 3, "x": 1.5, "ok": true, )"
            R"("nil": null, "l": [1, "a", [2.0]], "q": "a\"b\\c\n\t\u0001\u007f/"})");
  EXPECT_EQ(summoner_typed_line(pyjson{{"msg", "hi"}}),
            "{\"_version\": \"1.3.0\", \"_payload\": {\"msg\": \"hi\"}, \"_type\": {\"msg\": "
            "\"str\"}}\n");
  // recover_with_types of a relayed typed envelope gives the typed payload.
  EXPECT_EQ(summoner_recover(R"({"remote_addr": "a", "content": "{\"_version\": \"1.3.0\", )"
                             R"(\"_payload\": {\"n\": 2}, \"_type\": {\"n\": \"int\"}}"})"),
            (pyjson{{"remote_addr", "a"}, {"content", {{"n", 2}}}}));
  EXPECT_EQ(summoner_recover("Warning: Server is shutting down."),
            "Warning: Server is shutting down.");
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));
  EXPECT_TRUE(valid_utf8("h\xc3\xa9llo \xf0\x9d\x84\x9e"));
}

// -- Summoner to Summoner, as with the original servers -----------------------

TEST(Summoner, BroadcastReachesAllOthersNeverTheSender) {
  auto srv = start();
  ASSERT_NE(sport(*srv), 0);
  summoner_client a{sport(*srv)}, b{sport(*srv)}, c{sport(*srv)};
  wait_agents(*srv, 3);
  ASSERT_TRUE(a.send_line("hello"));
  for (auto* r : {&b, &c}) {
    auto l = r->read_relay();
    ASSERT_TRUE(l);
    EXPECT_TRUE(l->terminated);
    EXPECT_EQ(l->remote_addr, a.local_addr());
    EXPECT_EQ(l->content, "hello");
  }
  // a's next line is b's, not its own.
  ASSERT_TRUE(b.send_line("from b"));
  auto l = a.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "from b");
  EXPECT_EQ(l->remote_addr, b.local_addr());
}

TEST(Summoner, LineSplitAcrossWritesIsOneMessage) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  // One byte per write (TCP_NODELAY: one segment each).
  for (char ch : std::string{"split across reads\n"})
    ASSERT_TRUE(a.send_raw(std::string_view{&ch, 1}));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "split across reads");
  ASSERT_TRUE(a.send_line("next"));
  l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "next");
}

TEST(Summoner, SeveralLinesInOneWriteAreSeparateMessagesInOrder) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  ASSERT_TRUE(a.send_raw("one\ntwo\nthree\n"));
  for (auto want : {"one", "two", "three"}) {
    auto l = b.read_relay();
    ASSERT_TRUE(l);
    EXPECT_EQ(l->content, want);
  }
}

TEST(Summoner, CrlfLosesItsCarriageReturn) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  ASSERT_TRUE(a.send_raw("windows\r\nline\r\n"));
  for (auto want : {"windows", "line"}) {
    auto l = b.read_relay();
    ASSERT_TRUE(l);
    EXPECT_EQ(l->content, want);
  }
}

TEST(Summoner, LastLineWithoutNewlineAtEofIsRelayed) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  ASSERT_TRUE(a.send_raw("first\nlast words"));
  a.shutdown_write();
  for (auto want : {"first", "last words"}) {
    auto l = b.read_relay();
    ASSERT_TRUE(l);
    EXPECT_EQ(l->content, want);
  }
}

TEST(Summoner, EmptyLineIsAnEmptyContent) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  ASSERT_TRUE(a.send_raw("\n"));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "");
  EXPECT_EQ(l->recovered, (pyjson{{"remote_addr", a.local_addr()}, {"content", ""}}));
}

TEST(Summoner, NonAsciiTextArrivesIntact) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  const std::string text = "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x90\x8d";
  ASSERT_TRUE(a.send_line(text));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, text);
}

TEST(Summoner, JsonLineKeepsContentAsAJsonString) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  const std::string line = R"({"x": 1, "y": [1,2]})";
  ASSERT_TRUE(a.send_line(line));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, line) << l->raw; // a string, not a nested object
  EXPECT_EQ(l->recovered["content"], (pyjson{{"x", 1}, {"y", {1, 2}}}));
}

TEST(Summoner, TypedEnvelopeIsRelayedByteForByte) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  pyjson payload = pyjson::object();
  payload["msg"] = "caf\xc3\xa9";
  payload["n"] = 42;
  payload["ratio"] = 0.25;
  payload["tags"] = pyjson::array({"a", true, nullptr});
  payload["nested"] = pyjson{{"deep", pyjson::array({1, 2.5})}};
  ASSERT_TRUE(a.send_typed(payload));
  ASSERT_TRUE(a.send_typed("just a string"));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  auto sent = summoner_typed_line(payload);
  EXPECT_EQ(l->content, sent.substr(0, sent.size() - 1));
  EXPECT_EQ(l->recovered, (pyjson{{"remote_addr", a.local_addr()}, {"content", payload}}));
  l = b.read_relay();
  ASSERT_TRUE(l);
  sent = summoner_typed_line("just a string");
  EXPECT_EQ(l->content, sent.substr(0, sent.size() - 1));
  EXPECT_EQ(l->recovered["content"], "just a string");
}

// -- Summoner to Convoke ------------------------------------------------------------

TEST(Summoner, LinesReachConvokeAgentsAsEnvelopesOnTheSummonerRoute) {
  auto srv = start();
  auto bob = convoke_agent(*srv, "bob");
  summoner_client a{sport(*srv)};
  wait_agents(*srv, 2);
  pyjson payload{{"msg", "hi"}, {"n", 2}};
  ASSERT_TRUE(a.send_typed(payload));
  ASSERT_TRUE(a.send_line("plain text"));
  ASSERT_TRUE(a.send_line(R"({"x": [1, 2]})"));

  auto m = bob->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sender, name_of(a));
  EXPECT_EQ(m->route, "summoner");
  EXPECT_EQ(m->content_type, "application/json");
  EXPECT_EQ(m->payload, py_json_dumps(payload)) << "the _payload's bytes as the SDK wrote them";
  EXPECT_EQ(m->headers["summoner-version"], "1.3.0");
  EXPECT_EQ(m->headers["summoner-type"], py_json_dumps(summoner_type_tree(payload)));
  EXPECT_EQ(m->headers["summoner-remote-addr"], a.local_addr());

  m = bob->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "plain text");
  EXPECT_EQ(m->content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(m->headers.count("summoner-version"), 0u);
  EXPECT_EQ(m->headers["summoner-remote-addr"], a.local_addr());

  m = bob->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, R"({"x": [1, 2]})");
  EXPECT_EQ(m->content_type, "application/json");
}

TEST(Summoner, SummonerRouteIsConfigurable) {
  auto srv = start({{"summoner.route", "legacy.chat"}});
  auto cli = std::make_unique<blocking_client>(local_options(srv->port()), "watcher");
  ASSERT_FALSE(cli->connect());
  summoner_client a{sport(*srv)};
  wait_agents(*srv, 2);
  ASSERT_TRUE(a.send_line("on the configured route"));
  auto m = cli->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->route, "legacy.chat");
}

// -- Convoke to Summoner ---------------------------------------------------------------

TEST(Summoner, ConvokeBroadcastsOnAnyRouteReachSummonerAgents) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  auto bob = convoke_agent(*srv, "bob");
  wait_agents(*srv, 3);
  send_options text;
  text.content_type = "text/plain";
  ASSERT_FALSE(bob->publish("weather.paris", "sunny", text));
  ASSERT_FALSE(bob->broadcast("no route", text));
  for (auto* r : {&a, &b}) {
    for (auto want : {"sunny", "no route"}) {
      auto l = r->read_relay();
      ASSERT_TRUE(l);
      EXPECT_EQ(l->remote_addr, "bob");
      EXPECT_EQ(l->content, want);
      EXPECT_EQ(l->recovered, (pyjson{{"remote_addr", "bob"}, {"content", want}}));
    }
  }
}

TEST(Summoner, DirectMessageToTheSummonerAgentsNameReachesOnlyIt) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  auto bob = convoke_agent(*srv, "bob");
  wait_agents(*srv, 3);
  ASSERT_FALSE(bob->send_to(name_of(a), "psst, a"));
  ASSERT_FALSE(bob->broadcast("everyone"));
  auto l = a.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "psst, a");
  EXPECT_EQ(l->remote_addr, "bob");
  l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "everyone") << "b got a's direct message";
}

TEST(Summoner, JsonAndTypedPayloadsFromConvokeAreRecoveredByTheSdk) {
  auto srv = start();
  summoner_client a{sport(*srv)};
  auto bob = convoke_agent(*srv, "bob");
  wait_agents(*srv, 2);
  send_options json;
  json.content_type = "application/json";
  ASSERT_FALSE(bob->broadcast(R"({"temp": 21.5, "unit": "C"})", json));
  // A typed payload for SDK agents: the headers a Summoner line gets.
  pyjson payload{{"order", 7}, {"item", "tea"}};
  send_options typed = json;
  typed.headers["summoner-version"] = "1.3.0";
  typed.headers["summoner-type"] = py_json_dumps(summoner_type_tree(payload));
  ASSERT_FALSE(bob->broadcast(py_json_dumps(payload), typed));

  auto l = a.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, R"({"temp": 21.5, "unit": "C"})");
  EXPECT_EQ(l->recovered["content"], (pyjson{{"temp", 21.5}, {"unit", "C"}}));
  l = a.read_relay();
  ASSERT_TRUE(l);
  auto want = summoner_typed_line(payload);
  EXPECT_EQ(l->content, want.substr(0, want.size() - 1));
  EXPECT_EQ(l->recovered, (pyjson{{"remote_addr", "bob"}, {"content", payload}}));
}

TEST(Summoner, BinaryPayloadArrivesAsBase64Object) {
  auto srv = start();
  summoner_client a{sport(*srv)};
  auto bob = convoke_agent(*srv, "bob");
  wait_agents(*srv, 2);
  const std::string bytes{"\x00\xff\xfe binary \x80", 13};
  send_options bin;
  bin.content_type = "application/octet-stream";
  ASSERT_FALSE(bob->broadcast(bytes, bin));
  auto l = a.read_relay();
  ASSERT_TRUE(l);
  auto obj = nlohmann::json::parse(l->content, nullptr, false);
  ASSERT_TRUE(obj.is_object()) << l->content;
  EXPECT_EQ(obj["content_type"], "application/octet-stream");
  ASSERT_TRUE(obj["base64"].is_string()) << l->content;
  EXPECT_EQ(base64_decode(obj["base64"].get<std::string>()), bytes);
}

// -- notices become Warnings -------------------------------------------------------

TEST(Summoner, RateLimitSendsTheKnownWarningAndDropsTheExcess) {
  auto srv = start({{"limits.messages-per-second", "5"},
                    {"limits.messages-burst", "5"},
                    {"limits.quarantine-after", "0"}});
  auto a = summoner_client::from_address(sport(*srv), "127.0.0.40");
  auto b = summoner_client::from_address(sport(*srv), "127.0.0.41");
  auto c = summoner_client::from_address(sport(*srv), "127.0.0.42");
  wait_agents(*srv, 3);
  std::string burst;
  for (int i = 0; i < 20; ++i)
    burst += "m" + std::to_string(i) + "\n";
  ASSERT_TRUE(a.send_raw(burst));
  auto w = a.read_warning();
  ASSERT_TRUE(w);
  EXPECT_EQ(w->raw, "Warning: You are sending messages too quickly. Please slow down.");
  // c (another address, another bucket) marks the end for b.
  ASSERT_TRUE(c.send_line("end"));
  int got = 0;
  for (;;) {
    auto l = b.read_relay();
    ASSERT_TRUE(l);
    if (l->content == "end")
      break;
    EXPECT_EQ(l->content, "m" + std::to_string(got)) << "in order, the first ones";
    ++got;
  }
  EXPECT_GE(got, 5) << "the burst";
  EXPECT_LT(got, 20) << "nothing was dropped";
  EXPECT_TRUE(a.connected());
}

TEST(Summoner, QuarantineIsNotEscapedByReconnectingFromAnotherPort) {
  auto srv = start({{"limits.messages-per-second", "2"},
                    {"limits.messages-burst", "2"},
                    {"limits.quarantine-after", "1"},
                    {"limits.quarantine-for", "60s"}});
  auto flood = summoner_client::from_address(sport(*srv), "127.0.0.50");
  auto other = summoner_client::from_address(sport(*srv), "127.0.0.51");
  wait_agents(*srv, 2);
  std::string burst;
  for (int i = 0; i < 10; ++i)
    burst += "flood\n";
  ASSERT_TRUE(flood.send_raw(burst));
  std::vector<summoner_line> before;
  ASSERT_TRUE(flood.wait_closed(5s, &before));
  bool quarantined = false;
  for (auto& l : before)
    quarantined |= l.warning && l.raw.find("(quarantined)") != std::string::npos;
  EXPECT_TRUE(quarantined) << "no quarantine Warning before the close";
  // A new connection from the same address (a new port) is sent away too.
  auto again = summoner_client::from_address(sport(*srv), "127.0.0.50");
  before.clear();
  ASSERT_TRUE(again.wait_closed(5s, &before)) << "reconnecting escaped the quarantine";
  ASSERT_FALSE(before.empty());
  EXPECT_TRUE(before.back().warning);
  EXPECT_NE(before.back().raw.find("(quarantined)"), std::string::npos) << before.back().raw;
  // Another address is not affected.
  auto third = summoner_client::from_address(sport(*srv), "127.0.0.52");
  ASSERT_TRUE(eventually([&] { return srv->stats().agents == 2; }));
  ASSERT_TRUE(third.send_line("still fine"));
  size_t skipped = 0;
  std::optional<summoner_line> l;
  while ((l = other.read(3s)) && (!l->relay || l->content != "still fine"))
    ++skipped; // what flood got through before its quarantine
  ASSERT_TRUE(l);
  EXPECT_LE(skipped, 2u);
}

TEST(Summoner, InactivityClosesWithTheKnownWarning) {
  auto srv = start({{"summoner.idle-timeout", "300ms"}});
  summoner_client a{sport(*srv)};
  auto t0 = std::chrono::steady_clock::now();
  std::vector<summoner_line> before;
  ASSERT_TRUE(a.wait_closed(5s, &before));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].raw, "Warning: You have been disconnected due to inactivity.");
  EXPECT_TRUE(before[0].terminated);
}

TEST(Summoner, WithoutIdleTimeoutListenOnlyAgentsStay) {
  // Convoke agents' idle timeout does not apply: Summoner clients send no
  // heartbeats, and summoner.idle-timeout is off by default.
  auto srv = start({{"timeouts.idle", "300ms"}, {"timeouts.heartbeat-interval", "100ms"}});
  summoner_client a{sport(*srv)};
  wait_agents(*srv, 1);
  std::this_thread::sleep_for(600ms); // not synchronisation: the silence is what is tested
  auto bob = convoke_agent(*srv, "bob");
  ASSERT_FALSE(bob->broadcast("still here?"));
  auto l = a.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "still here?");
}

namespace {

/// A sender of `n` lines of `size` bytes ("<seq> ppp..."), keeping at most
/// `window` lines ahead of `progress` (the fast reader's count).
void blast_lines(summoner_client& c, int n, const std::atomic<int>& progress, int window = 256,
                 size_t size = 1000) {
  std::string burst;
  for (int i = 0; i < n;) {
    while (i - progress.load() > window)
      std::this_thread::yield();
    burst.clear();
    for (int k = 0; k < 32 && i < n; ++k, ++i) {
      auto line = std::to_string(i) + " ";
      line.resize(size, 'p');
      burst += line + "\n";
    }
    ASSERT_TRUE(c.send_raw(burst));
  }
}

int seq_of(const summoner_line& l) {
  return std::stoi(l.content.substr(0, l.content.find(' ')));
}

} // namespace

TEST(Summoner, SlowReaderIsDisconnectedWithAWarningOthersUnaffected) {
  auto srv = start({{"limits.max-frame-bytes", "32KiB"},
                    {"flow.output-high-water", "64KiB"},
                    {"flow.slow-consumer", "disconnect"}});
  summoner_client a{sport(*srv)}, fast{sport(*srv)};
  auto slow = summoner_client::with_receive_buffer(sport(*srv), 4096);
  wait_agents(*srv, 3);
  constexpr int n = 3000; // 3 MB: far beyond the slow reader's buffers
  std::atomic<int> progress{0};
  std::thread reader{[&] {
    for (int i = 0; i < n; ++i) {
      auto l = fast.read_relay(5s);
      ASSERT_TRUE(l) << "fast reader missed line " << i;
      ASSERT_EQ(seq_of(*l), i);
      progress = i + 1;
    }
  }};
  blast_lines(a, n, progress);
  reader.join();
  ASSERT_EQ(progress.load(), n);
  // The slow reader now reads: what it was sent, in order, then the Warning
  // and the close.
  std::vector<summoner_line> before;
  ASSERT_TRUE(slow.wait_closed(10s, &before));
  ASSERT_FALSE(before.empty());
  int next = 0;
  for (size_t i = 0; i + 1 < before.size(); ++i) {
    ASSERT_TRUE(before[i].relay) << before[i].raw;
    EXPECT_EQ(seq_of(before[i]), next++);
  }
  EXPECT_LT(next, n);
  EXPECT_TRUE(before.back().warning);
  EXPECT_NE(before.back().raw.find("(slow_consumer)"), std::string::npos) << before.back().raw;
  EXPECT_EQ(srv->stats().slow_consumers, 1u);
}

TEST(Summoner, SlowReaderWithDropPolicyLosesLinesCountedAndStays) {
  auto srv = start({{"limits.max-frame-bytes", "32KiB"},
                    {"flow.output-high-water", "64KiB"},
                    {"flow.slow-consumer", "drop"}});
  summoner_client a{sport(*srv)}, fast{sport(*srv)};
  auto slow = summoner_client::with_receive_buffer(sport(*srv), 4096);
  wait_agents(*srv, 3);
  constexpr int n = 3000;
  std::atomic<int> progress{0};
  std::thread reader{[&] {
    for (int i = 0; i < n; ++i) {
      auto l = fast.read_relay(5s);
      ASSERT_TRUE(l) << "fast reader missed line " << i;
      ASSERT_EQ(seq_of(*l), i);
      progress = i + 1;
    }
  }};
  blast_lines(a, n, progress);
  reader.join();
  ASSERT_EQ(progress.load(), n);
  // The slow reader catches up: lines in order with gaps, a Warning, the
  // count of what it lost; it is still connected. The server tells it what
  // it lost with the next line it is sent once its backlog is gone: a probe
  // line every 100 ms until one arrives (polling, bounded).
  int received = 0, last = -1;
  uint64_t dropped_reported = 0;
  bool warned = false, after = false;
  uint64_t probes = 0;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!after && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(a.send_line("after"));
    ++probes;
    while (auto l = slow.read(100ms)) {
      if (l->warning) {
        warned |= l->raw.find("(slow_consumer)") != std::string::npos;
        if (l->raw.find("(messages_dropped)") != std::string::npos)
          dropped_reported += std::stoull(l->raw.substr(std::string{"Warning: "}.size()));
        continue;
      }
      ASSERT_TRUE(l->relay) << l->raw;
      if (l->content == "after") {
        after = true;
        continue;
      }
      auto s = seq_of(*l);
      EXPECT_GT(s, last);
      last = s;
      ++received;
    }
  }
  ASSERT_TRUE(after) << "the slow reader got nothing after catching up; received " << received
                     << ", last " << last << ", dropped reported " << dropped_reported;
  EXPECT_TRUE(warned) << "no slow_consumer Warning when the dropping began";
  EXPECT_GT(dropped_reported, 0u) << "no messages_dropped Warning";
  EXPECT_LT(received, n) << "nothing was dropped";
  // Every line is either received or reported dropped (probes too may have
  // been dropped, at most all but the one that came).
  EXPECT_GE(received + dropped_reported, static_cast<uint64_t>(n))
    << "received " << received << " + reported dropped " << dropped_reported;
  EXPECT_LE(received + dropped_reported, n + probes - 1)
    << "received " << received << " + reported dropped " << dropped_reported;
  EXPECT_EQ(srv->stats().slow_consumers, 0u);
}

// -- guards the originals lack ---------------------------------------------------------

TEST(Summoner, LineWhoseRelayWouldExceedTheSdkLimitIsRefusedToItsSender) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  auto bob = convoke_agent(*srv, "bob");
  wait_agents(*srv, 3);
  // Each grows on relay: a plain 65 KB line, quotes (2x), control
  // characters (6x: \u0001).
  for (auto line :
       {std::string(65 * 1024, 'a'), std::string(33 * 1024, '"'), std::string(11 * 1024, '\x01')}) {
    ASSERT_TRUE(a.send_line(line));
    auto w = a.read_warning();
    ASSERT_TRUE(w);
    EXPECT_NE(w->raw.find("(message_too_large)"), std::string::npos) << w->raw;
  }
  ASSERT_TRUE(a.send_line("after"));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "after") << "b got a refused line";
  auto m = bob->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload, "after") << "bob got a refused line";
}

TEST(Summoner, LineWhoseRelayIsExactlyTheSdkLimitPasses) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  auto addr = a.local_addr();
  auto fixed = relay_size(addr, "");
  std::string fits(summoner_sdk_line_limit - fixed, 'x');
  ASSERT_EQ(relay_size(addr, fits), summoner_sdk_line_limit);
  std::string one_more = fits + "y";
  ASSERT_TRUE(a.send_line(fits));
  ASSERT_TRUE(a.send_line(one_more));
  ASSERT_TRUE(a.send_line("after"));
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content.size(), fits.size());
  EXPECT_EQ(l->raw.size() + 1, summoner_sdk_line_limit);
  l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "after");
  auto w = a.read_warning();
  ASSERT_TRUE(w);
  EXPECT_NE(w->raw.find("(message_too_large)"), std::string::npos) << w->raw;
}

TEST(Summoner, ConvokeMessageTooLargeForTheSdkIsNotSentToSummonerAgents) {
  auto srv = start();
  summoner_client a{sport(*srv)};
  auto bob = convoke_agent(*srv, "bob");
  auto carol = convoke_agent(*srv, "carol");
  wait_agents(*srv, 3);
  ASSERT_FALSE(bob->broadcast(std::string(100 * 1024, 'z')));
  ASSERT_FALSE(bob->broadcast("small"));
  auto m = carol->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->payload.size(), 100u * 1024) << "Convoke agents still get it";
  auto l = a.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "small");
}

TEST(Summoner, InvalidUtf8GetsAWarningAndAffectsOnlyItsSender) {
  auto srv = start();
  summoner_client a{sport(*srv)}, b{sport(*srv)};
  wait_agents(*srv, 2);
  ASSERT_TRUE(a.send_raw("bad \xff\xfe bytes\n"));
  ASSERT_TRUE(a.send_raw("overlong \xc0\xaf\n"));
  ASSERT_TRUE(a.send_line("good"));
  for (int i = 0; i < 2; ++i) {
    auto w = a.read_warning();
    ASSERT_TRUE(w);
    EXPECT_NE(w->raw.find("(invalid_utf8)"), std::string::npos) << w->raw;
  }
  auto l = b.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "good");
  ASSERT_TRUE(b.send_line("to a"));
  l = a.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "to a") << "a is still connected";
}

// -- names --------------------------------------------------------------------------

TEST(Summoner, OperatorNamesAndTakenNamesGetASuffix) {
  auto srv = start({{"summoner.names", "127.0.0.60=planner"}});
  auto bob = convoke_agent(*srv, "bob");
  auto p1 = summoner_client::from_address(sport(*srv), "127.0.0.60");
  wait_agents(*srv, 2);
  auto p2 = summoner_client::from_address(sport(*srv), "127.0.0.60");
  wait_agents(*srv, 3);
  ASSERT_TRUE(p1.send_line("one"));
  auto m = bob->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sender, "planner");
  EXPECT_EQ(m->headers["summoner-remote-addr"], "127.0.0.60:" + std::to_string(p1.local_port()));
  ASSERT_TRUE(p2.send_line("two"));
  m = bob->receive(3s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->sender, "planner-2");
  // Direct messages find them by those names.
  ASSERT_FALSE(bob->send_to("planner-2", "for two"));
  auto l = p2.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "one") << "p1's line";
  l = p2.read_relay();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->content, "for two");
}
