// Fault tests: the cases an outside audit ran against convoke-server, with
// clients written for the purpose. Real processes, real sockets, real
// signals; every test also checks that bystanders keep working.

#include <gtest/gtest.h>

#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <sstream>
#include <thread>

#include "convoke/common/net.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

raw_client join(uint16_t port, const std::string& name, std::vector<std::string> routes = {}) {
  raw_client c{port};
  auto w = c.hello(name, std::move(routes));
  EXPECT_TRUE(w.has_welcome()) << name << ": " << w.ShortDebugString();
  return c;
}

std::string envelopes(int count, size_t payload, const std::string& to = {}) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    v1::Frame f;
    f.mutable_envelope()->set_recipient(to);
    f.mutable_envelope()->set_client_seq(static_cast<uint64_t>(i));
    f.mutable_envelope()->set_payload(std::string(payload, 'p'));
    proto::append_frame(f, out);
  }
  return out;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

} // namespace

TEST(Fault, SigtermWithAClosingAndAStalledSessionExitsZeroWithinTheDrain) {
  // The audit: one session that never reads and one that sent a bad frame
  // (closing, its peer never closes). SIGTERM exited 1 after 7 s with "drain
  // did not finish in time", skipped the final stats line, and delayed the
  // Goodbye of well-behaved agents by 2.5 s.
  server_process srv; // built-in timeouts.drain = 5s
  auto good = join(srv.port, "good");
  raw_client stalled{srv.port};
  net::set_receive_buffer(stalled.fd(), 4096);
  ASSERT_TRUE(stalled.hello("stalled").has_welcome());
  auto pub = join(srv.port, "pub");
  ASSERT_TRUE(pub.send_bytes(envelopes(400, 8000, "stalled"))); // ~3 MiB, under the HWM
  ASSERT_TRUE(pub.ping());
  ASSERT_TRUE(pub.send_envelope("good", "before the signal"));
  auto first = good.read_envelope(5s);
  ASSERT_TRUE(first.has_value());
  raw_client bad{srv.port};
  ASSERT_TRUE(bad.hello("bad").has_welcome());
  ASSERT_TRUE(bad.send_bytes(std::string("\0\0\0\x02\xff\xff", 6))); // undecodable
  // Wait until the server has refused it (its Notice arrives); never close.
  auto notice = bad.read_kind(v1::Frame::kNotice, 5s);
  ASSERT_TRUE(notice.has_value());
  EXPECT_EQ(notice->notice().code(), "frame_undecodable");

  auto t0 = clock_type::now();
  srv.proc->signal(SIGTERM);
  auto bye = good.read_kind(v1::Frame::kGoodbye, 6s);
  auto goodbye_after = seconds_since(t0);
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(bye->goodbye().code(), "shutdown");
  EXPECT_LT(goodbye_after, 1.0) << "a well-behaved agent waited for the stuck ones";
  auto rc = srv.proc->wait(10s);
  auto exit_after = seconds_since(t0);
  EXPECT_EQ(rc, 0) << srv.proc->err();
  EXPECT_LT(exit_after, 5.5) << "the exit took longer than timeouts.drain";
  EXPECT_NE(srv.proc->err().find("stopped messages_in="), std::string::npos)
    << "no final stats line: " << srv.proc->err();
  // Every relayed message has its trace record (the trace was flushed).
  auto trace = srv.trace();
  size_t relays = 0;
  for (auto& t : trace)
    relays += t["event"] == "relay";
  EXPECT_EQ(relays, 401u);
}

namespace {

/// A counter from the server's final "stopped ..." log line.
uint64_t stat_of(const std::string& log, const std::string& key) {
  auto line = log.rfind("stopped messages_in=");
  if (line == std::string::npos)
    return 0;
  auto at = log.find(" " + key + "=", line);
  if (at == std::string::npos)
    return 0;
  return std::stoull(log.substr(at + key.size() + 2));
}

/// CPU seconds (user + system) a process has used, from /proc.
double cpu_seconds(int pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto rparen = stat.rfind(')');
  if (rparen == std::string::npos)
    return 0;
  std::istringstream in{stat.substr(rparen + 2)};
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14)
      utime = std::stoull(field);
    if (i == 15)
      stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

/// Open descriptors of a process.
size_t open_fds(int pid) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e :
       std::filesystem::directory_iterator{"/proc/" + std::to_string(pid) + "/fd"})
    ++n;
  return n;
}

} // namespace

TEST(Fault, AtTheDescriptorLimitTheServerBacksOffLogsAndRecovers) {
  // The audit: with RLIMIT_NOFILE reached and connections pending, the server
  // spun at 100% CPU and logged nothing.
  server_process srv{{}, {"/usr/bin/prlimit", "--nofile=64:64", "--"}};
  auto fds_at_start = open_fds(srv.proc->pid());
  ASSERT_LT(fds_at_start, 40u);
  std::vector<raw_client> clients;
  for (int i = 0; i < 100; ++i)
    clients.emplace_back(srv.port); // the kernel completes them all (backlog)
  // The server takes what it can; then the limit is reached.
  ASSERT_TRUE(eventually([&] { return open_fds(srv.proc->pid()) >= 60; }))
    << open_fds(srv.proc->pid());
  ASSERT_TRUE(srv.proc->wait_output("too many open files", 5s)) << srv.proc->err();
  auto cpu0 = cpu_seconds(srv.proc->pid());
  auto t0 = clock_type::now();
  // Observe a full second of the server at its limit with connections pending.
  ASSERT_FALSE(eventually([&] { return !srv.proc->running(); }, 1s));
  auto busy = (cpu_seconds(srv.proc->pid()) - cpu0) / seconds_since(t0);
  EXPECT_LT(busy, 0.2) << "the server spins at the descriptor limit";
  // Free descriptors: the server accepts again and serves a new agent.
  clients.clear();
  raw_client late{srv.port};
  auto w = late.hello("late");
  EXPECT_TRUE(w.has_welcome()) << w.ShortDebugString();
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
}

TEST(Fault, SilentConnectionsDoNotLockAgentsOut) {
  // The audit: connections that never say Hello counted toward
  // limits.max-agents, so a few silent sockets locked real agents out.
  server_process srv{{"--limits.max-agents", "5"}};
  std::vector<raw_client> silent;
  for (int i = 0; i < 20; ++i)
    silent.emplace_back(srv.port);
  std::vector<raw_client> agents;
  for (int i = 0; i < 5; ++i)
    agents.push_back(join(srv.port, "agent-" + std::to_string(i)));
  raw_client extra{srv.port};
  auto r = extra.hello("one-too-many");
  ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "server_full");
  ASSERT_TRUE(agents[0].send_envelope("agent-4", "still working"));
  auto e = agents[4].read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "still working");
}

TEST(Fault, AFloodOfSilentConnectionsEvictsTheOldestNotNewAgents) {
  server_process srv{{"--limits.max-handshakes", "10"}};
  std::vector<raw_client> silent;
  for (int i = 0; i < 10; ++i)
    silent.emplace_back(srv.port);
  // Every one of them is held by the server (handshaking) before the agent comes.
  ASSERT_TRUE(eventually([&] { return open_fds(srv.proc->pid()) >= 10 + 5; }));
  auto agent = join(srv.port, "real-agent");
  // The oldest silent connection made room, with a precise Notice.
  std::vector<v1::Frame> frames;
  ASSERT_TRUE(silent.front().wait_closed(5s, &frames));
  ASSERT_FALSE(frames.empty());
  ASSERT_TRUE(frames.back().has_notice());
  EXPECT_EQ(frames.back().notice().code(), "server_busy");
}

TEST(Fault, ServerWideBufferBudgetCutsStalledConsumersBeforeTheirOwnLimits) {
  // The audit: each connection may pin its output high-water mark (8 MiB)
  // plus partial input, with no bound across connections; 40 stalled
  // subscribers took RSS to 346 MB. Here 12 stalled consumers could hold
  // 12 x 4 MiB; the server-wide budget of 8 MiB must cut them first.
  server_process srv{{"--flow.output-high-water", "4MiB", "--limits.max-buffered-bytes", "8MiB",
                      "--trace.enabled", "false", "--timeouts.drain", "1s"}};
  std::vector<raw_client> stalled;
  for (int i = 0; i < 12; ++i) {
    raw_client c{srv.port};
    net::set_receive_buffer(c.fd(), 4096);
    ASSERT_TRUE(c.hello("stalled-" + std::to_string(i)).has_welcome());
    stalled.push_back(std::move(c));
  }
  auto reader = join(srv.port, "reader");
  auto pub = join(srv.port, "pub");
  auto rss_before = rss_kib(srv.proc->pid());
  constexpr int total = 20000;
  std::atomic<int> received{0};
  std::jthread rx{[&] {
    while (received < total && reader.read_envelope(10s))
      ++received;
  }};
  size_t rss_peak = 0;
  for (int sent = 0; sent < total;) {
    std::string burst;
    for (int k = 0; k < 50; ++k, ++sent) {
      v1::Frame f;
      f.mutable_envelope()->set_client_seq(static_cast<uint64_t>(sent));
      f.mutable_envelope()->set_payload(std::string(4000, 'b'));
      proto::append_frame(f, burst);
    }
    ASSERT_TRUE(pub.send_bytes(burst));
    while (sent - received > 500)
      std::this_thread::yield();
    if (sent % 2000 == 0)
      rss_peak = std::max(rss_peak, rss_kib(srv.proc->pid()));
  }
  rx.join();
  EXPECT_EQ(received.load(), total) << "the reading consumer must get everything";
  RecordProperty("server_rss_before_kib", std::to_string(rss_before));
  RecordProperty("server_rss_peak_kib", std::to_string(rss_peak));
  EXPECT_LT(rss_peak, rss_before + 16 * 1024)
    << "server RSS grew from " << rss_before << " KiB to " << rss_peak << " KiB";
  srv.proc->signal(SIGTERM);
  EXPECT_EQ(srv.proc->wait(10s), 0) << srv.proc->err();
  // Stalled consumers were cut for the budget, below their own 4 MiB mark
  // (their data still trickles out of the kernel's buffers, so the server's
  // own count is what tells).
  auto err = srv.proc->err();
  EXPECT_NE(err.find("reason=max-buffered-bytes"), std::string::npos) << err;
  EXPECT_GE(stat_of(err, "budget_exceeded"), 1u) << err;
  EXPECT_GE(stat_of(err, "slow_consumers"), 1u) << err;
}
