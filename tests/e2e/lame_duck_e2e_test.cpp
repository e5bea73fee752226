// Lame-duck mode of the real convoke-server process: SIGUSR2, the log
// lines, the closed port, Goodbye(lame_duck) spread over the duration, a
// message sent before the close delivered, exit 0 with the port file gone;
// a `convoke listen --reconnect` agent waits for its hint and reconnects to
// the next server on the same port. A SIGTERM during lame duck is the
// normal fast drain.

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <thread>

#include <httplib.h>

#include "convoke/common/net.hpp"
#include "convoke/proto/rules.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

bool can_connect(uint16_t port) {
  auto fd = net::tcp_connect("127.0.0.1", port, 1s);
  if (!fd)
    return false;
  ::close(*fd);
  return true;
}

/// The status of GET `path` on the admin listener (0: no answer).
int admin_status(const server_process& srv, const std::string& path) {
  httplib::Client c{"127.0.0.1", srv.admin_port};
  c.set_read_timeout(5);
  auto r = c.Get(path);
  return r ? r->status : 0;
}

/// Reads one raw agent's frames on a thread until its Goodbye (or close).
struct watcher {
  raw_client client;
  std::vector<v1::Frame> frames;
  std::optional<steady::time_point> goodbye_at;
  std::thread thread;

  void start() {
    thread = std::thread{[this] {
      while (auto f = client.read(10s)) {
        frames.push_back(*f);
        if (f->has_goodbye()) {
          goodbye_at = steady::now();
          client.close(); // as agents do: the server lingers until then
          return;
        }
      }
    }};
  }
  const v1::Goodbye* goodbye() const {
    return !frames.empty() && frames.back().has_goodbye() ? &frames.back().goodbye() : nullptr;
  }
};

/// The next server, on a given port (a rolling restart).
std::unique_ptr<process> server_on(uint16_t port, const temp_dir& dir) {
  auto p = std::make_unique<process>(std::vector<std::string>{
    binary("convoke-server"), "--listen.port", std::to_string(port), "--listen.port-file",
    dir.file("port2"), "--trace.file", dir.file("trace2.jsonl"), "--admin.port", "0"});
  if (!p->wait_output("listening", 10s))
    throw std::runtime_error("the second server did not start: " + p->err());
  return p;
}

} // namespace

TEST(LameDuckProcess, Sigusr2SendsAgentsAwayOneByOneAndExitsZero) {
  constexpr auto grace = 500ms;
  constexpr auto duration = 2500ms;
  server_process srv{{"--lame-duck.grace", "500ms", "--lame-duck.duration", "2500ms"}};
  std::vector<std::unique_ptr<watcher>> raw;
  for (auto name : {"a", "b", "c"}) {
    auto w = std::make_unique<watcher>();
    w->client = raw_client{srv.port};
    ASSERT_TRUE(w->client.hello(name).has_welcome()) << name;
    raw.push_back(std::move(w));
  }
  process cli{{binary("convoke"), "listen", "--server", srv.address(), "--name", "cli",
               "--reconnect", "--json"}};
  ASSERT_TRUE(cli.wait_output("\"event\":\"connected\"", 5s)) << cli.err();

  ASSERT_NE(srv.admin_port, 0);
  EXPECT_EQ(admin_status(srv, "/readyz"), 200);
  auto started = steady::now();
  srv.proc->signal(SIGUSR2);
  ASSERT_TRUE(srv.proc->wait_output("lame duck: stopped accepting", 5s)) << srv.proc->err();
  EXPECT_EQ(admin_status(srv, "/readyz"), 503) << "load balancers stop sending agents here";
  EXPECT_EQ(admin_status(srv, "/healthz"), 200) << "alive all the same";
  // Within the grace: a message sent now is relayed before any close.
  ASSERT_TRUE(raw[0]->client.send_envelope("b", "sent before the close"));
  for (auto& w : raw)
    w->start();
  EXPECT_FALSE(can_connect(srv.port)) << "new connections are refused";
  auto next = server_on(srv.port, srv.dir);

  ASSERT_EQ(srv.proc->wait(duration + 5s), 0) << srv.proc->err();
  auto exited = steady::now();
  EXPECT_LT(exited - started, duration + 2s);
  EXPECT_FALSE(std::filesystem::exists(srv.dir.file("port"))) << "the port file is removed";
  auto log = srv.proc->err();
  EXPECT_NE(log.find("received SIGUSR2; entering lame-duck mode"), std::string::npos) << log;
  EXPECT_NE(log.find("lame duck complete"), std::string::npos) << log;
  EXPECT_EQ(log.find("drain did not finish"), std::string::npos) << log;

  std::vector<steady::time_point> times;
  for (auto& w : raw) {
    w->thread.join();
    auto g = w->goodbye();
    ASSERT_NE(g, nullptr) << "every agent gets a Goodbye";
    EXPECT_EQ(g->code(), proto::codes::lame_duck);
    EXPECT_GE(g->reconnect_after_ms(), 250u);
    EXPECT_LE(g->reconnect_after_ms(), 250u + 250u);
    EXPECT_GE(*w->goodbye_at - started, grace - 50ms) << "not during the grace";
    EXPECT_LE(*w->goodbye_at - started, duration + 500ms);
    times.push_back(*w->goodbye_at);
  }
  // b got a's message ahead of its Goodbye.
  auto& b = raw[1]->frames;
  auto delivered = std::find_if(b.begin(), b.end(), [](const v1::Frame& f) {
    return f.has_delivery() && f.delivery().envelope().payload() == "sent before the close";
  });
  EXPECT_NE(delivered, b.end()) << "a message accepted before the close is delivered";

  // The CLI agent saw its Goodbye, waited for the hint and found the next
  // server on the same port.
  ASSERT_TRUE(cli.wait_output("\"code\":\"lame_duck\"", 5s)) << cli.out() << cli.err();
  ASSERT_TRUE(cli.wait_output("\"event\":\"reconnected\"", 5s)) << cli.out() << cli.err();
  EXPECT_NE(cli.out().find("reconnecting in"), std::string::npos) << cli.out();
  // With the CLI's close the Goodbyes span the window, one by one.
  std::sort(times.begin(), times.end());
  for (size_t i = 1; i < times.size(); ++i)
    EXPECT_GT(times[i] - times[i - 1], 100ms) << "closes are spread, not all at once";
  EXPECT_GT(times.back() - times.front(), (duration - grace) / 3);

  cli.signal(SIGTERM);
  EXPECT_EQ(cli.wait(5s), 0) << cli.err();
  next->signal(SIGTERM);
  EXPECT_EQ(next->wait(10s), 0) << next->err();
}

TEST(LameDuckProcess, SigtermDuringLameDuckDrainsAtOnce) {
  server_process srv{{"--lame-duck.grace", "20s", "--lame-duck.duration", "60s"}};
  watcher a;
  a.client = raw_client{srv.port};
  ASSERT_TRUE(a.client.hello("a").has_welcome());
  a.start();
  srv.proc->signal(SIGUSR2);
  ASSERT_TRUE(srv.proc->wait_output("lame duck: stopped accepting", 5s)) << srv.proc->err();
  srv.proc->signal(SIGUSR2); // a second one changes nothing
  ASSERT_TRUE(srv.proc->wait_output("received SIGUSR2; already draining", 5s)) << srv.proc->err();
  auto t = steady::now();
  srv.proc->signal(SIGTERM);
  ASSERT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  EXPECT_LT(steady::now() - t, 5s) << "timeouts.drain, not the lame-duck duration";
  a.thread.join();
  ASSERT_NE(a.goodbye(), nullptr);
  EXPECT_EQ(a.goodbye()->code(), proto::codes::shutdown);
  EXPECT_EQ(a.goodbye()->reconnect_after_ms(), 0u);
  EXPECT_NE(srv.proc->err().find("received SIGTERM; draining"), std::string::npos);
}
