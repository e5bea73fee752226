// Fault tests: the cases an outside audit ran against convoke-server, with
// clients written for the purpose. Real processes, real sockets, real
// signals; every test also checks that bystanders keep working.

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <thread>

#include "convoke/common/net.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"

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
