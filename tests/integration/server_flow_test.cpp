// Flow control: a consumer that stops reading is cut off (or skipped) per
// policy while everybody else receives everything.

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <sys/socket.h>

#include "convoke/common/net.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;

namespace {

constexpr int payload_size = 1000;
constexpr int burst_size = 32;

/// Sends `n` broadcasts of `payload_size` bytes with client_seq 0..n-1, in
/// bursts, keeping at most `window` messages ahead of `progress` (what the
/// well-behaved consumer has received): the sender never outruns it, so only
/// a consumer that stops reading can fall behind.
void blast(raw_client& c, int n, const std::atomic<int>& progress, int window = 128) {
  std::string burst;
  for (int i = 0; i < n;) {
    while (i - progress.load() > window)
      std::this_thread::yield();
    burst.clear();
    for (int k = 0; k < burst_size && i < n; ++k, ++i) {
      v1::Frame f;
      f.mutable_envelope()->set_client_seq(static_cast<uint64_t>(i));
      f.mutable_envelope()->set_payload(std::string(payload_size, 'p'));
      proto::append_frame(f, burst);
    }
    ASSERT_TRUE(c.send_bytes(burst));
  }
}

/// Reads `n` envelopes in order, publishing progress.
void consume_all(raw_client& c, int n, std::atomic<int>& progress) {
  for (int i = 0; i < n; ++i) {
    auto e = c.read_envelope(5s);
    ASSERT_TRUE(e.has_value()) << "consumer missed message " << i;
    ASSERT_EQ(e->client_seq(), static_cast<uint64_t>(i));
    progress = i + 1;
  }
}

raw_client join(uint16_t port, const std::string& name) {
  raw_client c{port};
  auto w = c.hello(name);
  EXPECT_TRUE(w.has_welcome()) << w.ShortDebugString();
  return c;
}

/// A consumer that joins and then does not read. Kernel buffers on both ends
/// absorb several MB before the server's own output buffer starts to grow,
/// so the tests send far more than that.
raw_client stalled_consumer(uint16_t port) {
  raw_client c{port};
  auto w = c.hello("stalled");
  EXPECT_TRUE(w.has_welcome());
  return c;
}

} // namespace

TEST(ServerFlow, SlowConsumerIsDisconnectedWhileOthersGetEverything) {
  test_server srv{[](auto& cfg) {
    cfg.max_frame_bytes = 16 * 1024;
    cfg.output_high_water = 256 * 1024;
    cfg.drain_timeout = 5s; // grace for the stalled peer to read its Notice
  }};
  constexpr int n = 40000; // ~40 MB per receiver: far above kernel buffers + high-water mark
  auto stalled = stalled_consumer(srv.port());
  auto fast = join(srv.port(), "fast");
  auto pub = join(srv.port(), "pub");
  std::atomic<int> progress{0};
  {
    std::jthread sender{[&] { blast(pub, n, progress); }};
    consume_all(fast, n, progress);
  }
  EXPECT_EQ(srv.stats().slow_consumers, 1u);
  // The stalled agent finds data, then (if it read in time) the Notice, then EOF.
  std::vector<v1::Frame> frames;
  EXPECT_TRUE(stalled.wait_closed(5s, &frames));
  // The Notice reached it (ahead of what was still queued in the server),
  // and what it never got is counted, not lost silently: every message is
  // either received or in `dropped`, once its session has ended.
  size_t received = 0;
  bool notice = false;
  for (auto& f : frames) {
    received += f.has_delivery();
    notice = notice || (f.has_notice() && f.notice().code() == "slow_consumer");
  }
  EXPECT_TRUE(notice) << "no slow_consumer Notice";
  stalled.close();
  EXPECT_TRUE(eventually([&] { return srv.stats().connections_open == 2; }));
  // Deliveries queued for it = all deliveries minus the fast consumer's n
  // (after its disconnect, broadcasts no longer count it as a receiver).
  auto queued_for_it = srv.stats().deliveries - static_cast<uint64_t>(n);
  EXPECT_GT(queued_for_it, received) << "it cannot have received everything";
  EXPECT_EQ(received + srv.stats().dropped, queued_for_it);
}

TEST(ServerFlow, DropPolicySkipsASlowConsumerAndTellsItHowManyItMissed) {
  test_server srv{[](auto& cfg) {
    cfg.max_frame_bytes = 16 * 1024;
    cfg.output_high_water = 256 * 1024;
    cfg.slow_consumer = server::slow_consumer_policy::drop;
  }};
  constexpr int n = 40000;
  auto slow = stalled_consumer(srv.port());
  auto fast = join(srv.port(), "fast");
  auto pub = join(srv.port(), "pub");
  std::atomic<int> progress{0};
  {
    std::jthread sender{[&] { blast(pub, n, progress); }};
    consume_all(fast, n, progress);
  }
  auto dropped = srv.stats().dropped;
  EXPECT_GT(dropped, 0u);
  // Now the slow one reads everything that was queued for it: in order, and
  // together with what was dropped, everything. Nothing more is sent to it,
  // yet it learns how many it missed once it has caught up (the audit: the
  // count came only with the next delivery, so an idle consumer never knew).
  uint64_t received = 0;
  uint64_t next = 0;
  std::vector<v1::Notice> notices;
  while (auto f = slow.read(1s)) {
    if (f->has_notice()) {
      notices.push_back(f->notice());
      if (f->notice().code() == "messages_dropped")
        break;
    }
    if (!f->has_delivery())
      continue;
    EXPECT_GE(f->delivery().envelope().client_seq(), next) << "reordered";
    next = f->delivery().envelope().client_seq() + 1;
    ++received;
  }
  EXPECT_EQ(received + dropped, static_cast<uint64_t>(n));
  ASSERT_EQ(notices.size(), 2u);
  // First, ahead of the backlog, the news that drops began...
  EXPECT_EQ(notices[0].code(), "slow_consumer");
  EXPECT_EQ(notices[0].severity(), v1::Notice::WARNING);
  // ...and once caught up, how many were dropped.
  EXPECT_EQ(notices[1].code(), "messages_dropped");
  EXPECT_EQ(notices[1].severity(), v1::Notice::WARNING);
  EXPECT_EQ(notices[1].text().rfind(std::to_string(dropped) + " messages", 0), 0u)
    << notices[1].text();
  // And it is served normally again.
  ASSERT_TRUE(pub.send_envelope("stalled", "after"));
  auto e = slow.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "after");
  EXPECT_EQ(srv.stats().slow_consumers, 0u);
}

TEST(ServerFlow, ServerGeneratedNoticesStayBoundedForAnAgentThatNeverReads) {
  // An agent that never reads and sends a flood of messages to nobody: the
  // Notices the server owes it must not pile up without bound (they are
  // rate-limited, and they obey the output high-water mark).
  test_server srv{[](auto& cfg) {
    cfg.max_frame_bytes = 16 * 1024;
    cfg.output_high_water = 64 * 1024;
  }};
  raw_client flooder{srv.port()};
  ASSERT_TRUE(flooder.hello("flooder").has_welcome());
  auto bystander = join(srv.port(), "bystander");
  std::string burst;
  for (int i = 0; i < 2000; ++i) {
    v1::Frame f;
    f.mutable_envelope()->set_recipient("nobody");
    proto::append_frame(f, burst);
  }
  constexpr uint64_t rounds = 100;
  for (uint64_t round = 0; round < rounds; ++round)
    ASSERT_TRUE(flooder.send_bytes(burst));
  ASSERT_TRUE(eventually([&] { return srv.stats().undeliverable == rounds * 2000; }, 20s))
    << srv.stats().undeliverable;
  // Once the router's credits are back, what the server holds for the
  // flooder is a few rate-limited Notices (200,000 of them would be ~20 MB).
  EXPECT_TRUE(eventually([&] { return srv.stats().buffered_bytes < 16u * 1024; }))
    << srv.stats().buffered_bytes;
  EXPECT_EQ(srv.stats().slow_consumers, 0u);
  EXPECT_TRUE(bystander.ping());
}

TEST(ServerFlow, PartialFramesOverTheBudgetPauseOnlyTheirSenders) {
  // Found by review: a few agents holding large partial frames pushed the
  // server over limits.max-buffered-bytes, and every session stopped
  // reading until timeouts.frame closed them (a bystander's message took
  // 9.4 s). Now only the sessions holding the input stop reading, and they
  // learn why (server_busy) when their frame cannot be completed.
  test_server srv{[](auto& cfg) {
    cfg.max_buffered_bytes = 4u << 20;
    cfg.frame_timeout = 1500ms;
  }};
  auto a = join(srv.port(), "victim1");
  auto b = join(srv.port(), "victim2");
  std::vector<raw_client> holders;
  for (int i = 0; i < 5; ++i) {
    auto c = join(srv.port(), "holder-" + std::to_string(i));
    std::string partial(proto::header_size, '\0');
    proto::write_header(partial.data(), 1'000'000);
    partial += "\x1a";
    partial.append(900'000, '\0');
    ASSERT_TRUE(c.send_bytes(partial));
    holders.push_back(std::move(c));
  }
  ASSERT_TRUE(eventually([&] { return srv.stats().buffered_bytes > (4u << 20); }));
  for (int round = 0; round < 3; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(a.send_envelope("victim2", "still served"));
    auto e = b.read_envelope(2s);
    ASSERT_TRUE(e.has_value()) << "a bystander was paused with the holders";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  }
  // A holder's frame cannot complete while the server is over its budget:
  // it is told so, precisely.
  std::vector<v1::Frame> frames;
  ASSERT_TRUE(holders.back().wait_closed(5s, &frames));
  ASSERT_FALSE(frames.empty());
  ASSERT_TRUE(frames.back().has_notice());
  EXPECT_TRUE(frames.back().notice().code() == "server_busy"
              || frames.back().notice().code() == "frame_timeout")
    << frames.back().ShortDebugString();
}

TEST(ServerFlow, DropPolicyASteadyButSlowReaderIsNotTakenForIdle) {
  // Found by review: under the drop policy, heartbeats to a slow reader are
  // dropped or queued behind its backlog, so a reader that reads steadily
  // (and would answer every heartbeat it sees) was closed for idleness.
  // Reading what the server sends now counts as being alive.
  test_server srv{[](auto& cfg) {
    cfg.slow_consumer = server::slow_consumer_policy::drop;
    cfg.output_high_water = 64 * 1024;
    cfg.max_frame_bytes = 32 * 1024;
    cfg.idle_timeout = 1500ms;
    cfg.heartbeat_interval = 500ms;
  }};
  auto slow = raw_client::with_receive_buffer(srv.port(), 4096);
  ASSERT_TRUE(slow.hello("slow").has_welcome());
  auto fast = join(srv.port(), "fast");
  std::atomic<bool> stop{false};
  std::jthread producer{[&] {
    std::string burst;
    for (int i = 0; i < 64; ++i) {
      v1::Frame f;
      f.mutable_envelope()->set_recipient("slow");
      f.mutable_envelope()->set_payload(std::string(1000, 'x'));
      proto::append_frame(f, burst);
    }
    while (!stop && fast.send_bytes(burst)) // as fast as the server takes it
      ;
  }};
  // The slow reader: 20 frames every 100 ms (~200 KB/s), answering every
  // heartbeat it reads, for three idle timeouts.
  auto until = std::chrono::steady_clock::now() + 4500ms;
  bool closed = false;
  while (std::chrono::steady_clock::now() < until && !closed) {
    for (int k = 0; k < 20 && !closed; ++k) {
      auto f = slow.read(50ms);
      if (!f) {
        closed = !slow.connected() || slow.wait_closed(1ms);
        break;
      }
      if (f->has_heartbeat() && f->heartbeat().seq() != 0) {
        v1::Frame reply;
        reply.mutable_heartbeat()->set_reply_to(f->heartbeat().seq());
        slow.send(reply);
      }
      closed = f->has_notice() && f->notice().severity() == v1::Notice::ERROR;
    }
    std::this_thread::sleep_for(100ms);
  }
  stop = true;
  EXPECT_FALSE(closed) << "the slow reader was closed";
  EXPECT_EQ(srv.stats().timeouts, 0u);
  EXPECT_GT(srv.stats().dropped, 0u) << "it is slow: messages to it were dropped";
}
