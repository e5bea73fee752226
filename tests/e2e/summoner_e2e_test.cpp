// End to end (issue 12): a real convoke-server with its Summoner listener, a
// Python agent that behaves as the Summoner SDK does on the wire
// (tests/interop/summoner_agent.py) and Convoke agents (the `convoke` CLI)
// exchange messages both ways; SIGTERM drains the Summoner agents with the
// Warning they know; `convoke trace` names them.

#include <gtest/gtest.h>

#include <csignal>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "server_process.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);) {
    auto j = json::parse(line, nullptr, false);
    if (!j.is_discarded())
      out.push_back(std::move(j));
  }
  return out;
}

/// A convoke-server with the Summoner listener on a free port.
struct summoner_server {
  temp_dir files;
  std::unique_ptr<server_process> srv;
  uint16_t summoner_port = 0;

  explicit summoner_server(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--summoner.listen", "127.0.0.1:0", "--summoner.port-file",
                                  files.file("summoner-port")};
    args.insert(args.end(), extra.begin(), extra.end());
    srv = std::make_unique<server_process>(args);
    EXPECT_TRUE(eventually([&] { return !read_file(files.file("summoner-port")).empty(); }))
      << srv->proc->err();
    auto text = read_file(files.file("summoner-port"));
    summoner_port = text.empty() ? 0 : static_cast<uint16_t>(std::stoi(text));
  }
};

/// A Python Summoner agent (its events on stdout as JSON lines).
struct py_agent {
  std::unique_ptr<process> proc;
  std::string addr; // its ip:port

  py_agent(uint16_t port, const std::string& name, bool hello = true) {
    std::vector<std::string> argv{"/usr/bin/python3",
                                  CONVOKE_SOURCE_DIR "/tests/interop/summoner_agent.py",
                                  "--port",
                                  std::to_string(port),
                                  "--name",
                                  name,
                                  "--echo"};
    if (hello)
      argv.push_back("--hello");
    proc = std::make_unique<process>(argv);
    EXPECT_TRUE(proc->wait_output("\"connected\"", 10s, false)) << proc->err();
    for (auto& e : events())
      if (e["event"] == "connected")
        addr = e["addr"];
  }

  std::vector<json> events() const {
    return json_lines(proc->out());
  }

  /// Messages it received from `from` whose content equals `content`.
  size_t count(const std::string& from, const json& content) const {
    size_t n = 0;
    for (auto& e : events())
      n += e["event"] == "message" && e["remote_addr"] == from && e["content"] == content;
    return n;
  }
};

/// `convoke listen --json`: a Convoke agent printing what it receives.
struct listener {
  std::unique_ptr<process> proc;

  listener(uint16_t port, const std::string& name) {
    proc = std::make_unique<process>(
      std::vector<std::string>{binary("convoke"), "listen", "--json", "-s",
                               "127.0.0.1:" + std::to_string(port), "-n", name});
    EXPECT_TRUE(proc->wait_output("\"event\":\"connected\"", 10s, false)) << proc->err();
  }

  /// Messages from `from` whose payload, parsed as JSON, equals `payload`.
  size_t count(const std::string& from, const json& payload) const {
    size_t n = 0;
    for (auto& e : json_lines(proc->out()))
      if (e["event"] == "message" && e["from"] == from && e.contains("payload")
          && e["payload"].is_string())
        n += json::parse(e["payload"].get<std::string>(), nullptr, false) == payload;
    return n;
  }
};

int convoke_send(uint16_t port, std::vector<std::string> args) {
  std::vector<std::string> argv{
    binary("convoke"), "send", "-s", "127.0.0.1:" + std::to_string(port), "-n", "operator"};
  argv.insert(argv.end(), args.begin(), args.end());
  process p{argv};
  auto rc = p.wait(10s);
  EXPECT_EQ(rc, 0) << p.err();
  return rc.value_or(-1);
}

} // namespace

TEST(SummonerE2E, SummonerAndConvokeAgentsExchangeMessagesBothWays) {
  summoner_server s;
  ASSERT_NE(s.summoner_port, 0);
  auto port = s.srv->port;
  listener view{port, "view"};
  py_agent p1{s.summoner_port, "p1"};
  // p1's hello reaching the Convoke agent shows its session is registered.
  ASSERT_TRUE(eventually(
    [&] {
      return view.count("summoner@" + p1.addr, {{"hello", "p1"}}) == 1;
    },
    10s))
    << view.proc->out();
  py_agent p2{s.summoner_port, "p2"};
  ASSERT_TRUE(eventually(
    [&] {
      return view.count("summoner@" + p2.addr, {{"hello", "p2"}}) == 1;
    },
    10s));
  // Summoner to Summoner: p1 got p2's typed hello, recovered as the SDK does.
  ASSERT_TRUE(eventually(
    [&] {
      return p1.count(p2.addr, {{"hello", "p2"}}) == 1;
    },
    10s))
    << p1.proc->out();

  // Convoke to Summoner (a broadcast on a route), and back: both echo.
  convoke_send(port, {"-r", "weather.paris", "ping"});
  for (auto* p : {&p1, &p2}) {
    ASSERT_TRUE(eventually([&] { return p->count("operator", "ping") == 1; }, 10s))
      << p->proc->out();
    auto who = p == &p1 ? "p1" : "p2";
    ASSERT_TRUE(eventually(
      [&] {
        return view.count("summoner@" + p->addr, {{"echo", "ping"}, {"from", who}}) == 1;
      },
      10s))
      << view.proc->out();
  }
  ASSERT_TRUE(eventually([&] { return p1.count(p2.addr, {{"echo", "ping"}, {"from", "p2"}}); }));

  // A direct message to p1's name reaches p1 only.
  convoke_send(port, {"-t", "summoner@" + p1.addr, "direct"});
  ASSERT_TRUE(eventually([&] { return p1.count("operator", "direct") == 1; }, 10s));
  ASSERT_TRUE(eventually(
    [&] {
      return view.count("summoner@" + p1.addr, {{"echo", "direct"}, {"from", "p1"}}) == 1;
    },
    10s));
  // p2 sees p1's echo (a Summoner line), but never the direct message.
  ASSERT_TRUE(eventually([&] { return p2.count(p1.addr, {{"echo", "direct"}, {"from", "p1"}}); }));
  EXPECT_EQ(p2.count("operator", "direct"), 0u);

  for (auto& e : p1.events())
    EXPECT_NE(e["event"], "error") << e.dump();

  // The conversation in `convoke trace`, once the server has written it.
  s.srv->proc->signal(SIGTERM);
  ASSERT_EQ(s.srv->proc->wait(10s), 0) << s.srv->proc->err();
  process trace{{binary("convoke"), "trace", "--file", s.srv->dir.file("trace.jsonl")}};
  ASSERT_EQ(trace.wait(10s), 0) << trace.err();
  auto out = trace.out();
  EXPECT_NE(out.find("summoner@" + p1.addr), std::string::npos) << out;
  EXPECT_NE(out.find("summoner@" + p2.addr), std::string::npos) << out;
  EXPECT_NE(out.find("operator"), std::string::npos) << out;
}

TEST(SummonerE2E, SigtermDrainsSummonerAgentsWithTheShutdownWarning) {
  summoner_server s;
  ASSERT_NE(s.summoner_port, 0);
  auto port = s.srv->port;
  listener view{port, "view"};
  py_agent p1{s.summoner_port, "p1"};
  ASSERT_TRUE(eventually(
    [&] {
      return view.count("summoner@" + p1.addr, {{"hello", "p1"}}) == 1;
    },
    10s));
  py_agent p2{s.summoner_port, "p2"};
  ASSERT_TRUE(eventually(
    [&] {
      return view.count("summoner@" + p2.addr, {{"hello", "p2"}}) == 1;
    },
    10s));
  // p2 sends 500 lines; once their last has reached the Convoke agent, all
  // of them have been routed to p1 too.
  constexpr int n = 500;
  convoke_send(port, {"-t", "summoner@" + p2.addr, "burst:" + std::to_string(n)});
  ASSERT_TRUE(eventually(
    [&] {
      return view.count("summoner@" + p2.addr, {{"done", n}, {"from", "p2"}}) == 1;
    },
    10s))
    << view.proc->out();
  s.srv->proc->signal(SIGTERM);

  for (auto* p : {&p1, &p2}) {
    auto rc = p->proc->wait(10s);
    ASSERT_EQ(rc, 0) << p->proc->out() << p->proc->err();
    auto ev = p->events();
    ASSERT_GE(ev.size(), 3u);
    EXPECT_EQ(ev.back()["event"], "eof");
    EXPECT_EQ(ev[ev.size() - 2]["event"], "warning");
    EXPECT_EQ(ev[ev.size() - 2]["text"], "Warning: Server is shutting down.");
    for (auto& e : ev)
      EXPECT_NE(e["event"], "error") << e.dump();
  }
  // p1 got all of p2's lines, in order, before the Warning.
  int next = 0;
  bool done = false;
  for (auto& e : p1.events()) {
    if (e["event"] != "message" || e["remote_addr"] != p2.addr)
      continue;
    if (e["content"].contains("seq")) {
      EXPECT_EQ(e["content"]["seq"], next) << e.dump();
      ++next;
    } else if (e["content"].contains("done")) {
      done = true;
    }
  }
  EXPECT_EQ(next, n);
  EXPECT_TRUE(done);
  EXPECT_EQ(s.srv->proc->wait(10s), 0) << s.srv->proc->err();
}
