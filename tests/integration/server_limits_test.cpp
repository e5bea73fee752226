// Rate limits and quarantine by principal (for now the peer's IP address),
// and the per-address connection limit, over real sockets. Clients use
// different loopback addresses (127.0.0.x) to be different principals.

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <algorithm>
#include <sstream>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;

namespace {

raw_client join(uint16_t port, const std::string& from, const std::string& name) {
  auto c = raw_client::from_address(port, from);
  auto w = c.hello(name);
  EXPECT_TRUE(w.has_welcome()) << name << ": " << w.ShortDebugString();
  return c;
}

/// `n` direct messages to `to` in one write (one read, one batch for the
/// server), with client_seq first..first+n-1.
std::string envelopes(const std::string& to, int n, uint64_t first = 1, size_t size = 100) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    v1::Frame f;
    f.mutable_envelope()->set_recipient(to);
    f.mutable_envelope()->set_client_seq(first + static_cast<uint64_t>(i));
    f.mutable_envelope()->set_payload(std::string(size, 'x'));
    proto::append_frame(f, out);
  }
  return out;
}

std::vector<nlohmann::json> read_trace(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in{read_file(path)};
  for (std::string line; std::getline(in, line);)
    if (!line.empty())
      out.push_back(nlohmann::json::parse(line));
  return out;
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit.
rlim_t raise_fd_limit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

} // namespace

TEST(ServerLimits, AFloodingAgentIsRateLimitedWhileAnotherAgentsTrafficFlows) {
  test_server srv{[](auto& cfg) {
    cfg.messages_per_second = 1; // nothing refills within the test's milliseconds
    cfg.messages_burst = 10;
    cfg.quarantine_after = 0;
  }};
  auto sink = join(srv.port(), "127.0.0.3", "sink");
  auto flood = join(srv.port(), "127.0.0.1", "flood");
  auto calm = join(srv.port(), "127.0.0.2", "calm");
  constexpr int n = 100;
  ASSERT_TRUE(flood.send_bytes(envelopes("sink", n)));
  ASSERT_TRUE(flood.ping());
  ASSERT_TRUE(calm.send_bytes(envelopes("sink", 5)));
  ASSERT_TRUE(calm.ping());
  // Exact accounting, per envelope although they came in one read: the
  // burst passes, the rest is refused and counted; the other principal's
  // messages all pass.
  auto s = srv.stats();
  EXPECT_EQ(s.messages_in, 10u + 5u);
  EXPECT_EQ(s.rate_limited, static_cast<uint64_t>(n - 10));
  int from_flood = 0;
  int from_calm = 0;
  for (int i = 0; i < 15; ++i) {
    auto e = sink.read_envelope();
    ASSERT_TRUE(e.has_value()) << "message " << i << " missing";
    (e->sender() == "flood" ? from_flood : from_calm)++;
    if (e->sender() == "flood") {
      EXPECT_LE(e->client_seq(), 10u) << "only the burst is relayed";
    }
  }
  EXPECT_EQ(from_flood, 10);
  EXPECT_EQ(from_calm, 5);
  ASSERT_TRUE(sink.ping());
  EXPECT_FALSE(sink.read_envelope(200ms).has_value()) << "the excess was relayed";
  // The flooder learns why, with when to retry; those Notices are limited
  // like the other per-message Notices (20 at once), the rest summarised.
  int notices = 0;
  for (;;) {
    auto f = flood.read_kind(v1::Frame::kNotice, 3s);
    ASSERT_TRUE(f.has_value()) << "no notices_suppressed summary";
    auto& no = f->notice();
    if (no.code() == "notices_suppressed") {
      EXPECT_NE(no.text().find("rate limit"), std::string::npos) << no.text();
      break;
    }
    ASSERT_EQ(no.code(), "rate_limited") << f->ShortDebugString();
    EXPECT_EQ(no.severity(), v1::Notice::WARNING);
    EXPECT_EQ(no.client_seq(), static_cast<uint64_t>(11 + notices));
    EXPECT_GT(no.retry_after_ms(), 0u);
    EXPECT_LE(no.retry_after_ms(), 1000u);
    EXPECT_NE(no.text().find("limits.messages-per-second"), std::string::npos) << no.text();
    EXPECT_NE(no.text().find("retry after"), std::string::npos) << no.text();
    ++notices;
  }
  EXPECT_EQ(notices, 20);
  // Still connected: a WARNING, not a disconnect.
  EXPECT_TRUE(flood.ping());
}

TEST(ServerLimits, RefusedMessagesAreTracedAndSuppressedNoticesSummarisedInTheTrace) {
  temp_dir dir;
  test_server srv{[&](auto& cfg) {
    cfg.messages_per_second = 1;
    cfg.messages_burst = 1;
    cfg.quarantine_after = 0;
    cfg.trace_enabled = true;
    cfg.trace_file = dir.file("trace.jsonl");
    cfg.trace_format = logging::format::json;
  }};
  auto sink = join(srv.port(), "127.0.0.41", "sink");
  auto flood = join(srv.port(), "127.0.0.40", "flood");
  ASSERT_TRUE(flood.send_bytes(envelopes("sink", 31)));
  // 20 Notices, then the summary of the other 10 at the end of the second.
  auto summary = [&] {
    for (;;) {
      auto f = flood.read_kind(v1::Frame::kNotice, 3s);
      if (!f || f->notice().code() == "notices_suppressed")
        return f;
    }
  }();
  ASSERT_TRUE(summary.has_value());
  srv.get().flush_traces(2s);
  int single = 0;
  uint64_t summarised = 0;
  for (auto& rec : read_trace(dir.file("trace.jsonl"))) {
    if (rec.value("reason", "") != "rate_limited")
      continue;
    EXPECT_EQ(rec.value("event", ""), "undeliverable") << rec.dump();
    if (rec.value("count", 0u) > 1)
      summarised += rec.value("count", 0u);
    else
      ++single;
  }
  EXPECT_EQ(single, 20);
  EXPECT_EQ(summarised, 10u);
  EXPECT_EQ(srv.stats().rate_limited, 30u);
}

TEST(ServerLimits, ABytesLimitRefusesWhatDoesNotFitAndSaysHowLongToWait) {
  test_server srv{[](auto& cfg) {
    cfg.max_frame_bytes = 16 * 1024;
    cfg.bytes_per_second = 1024;      // a refill of ~1 byte per millisecond
    cfg.bytes_burst = 16 * 1024 + 64; // one large message
    cfg.quarantine_after = 0;
  }};
  auto sink = join(srv.port(), "127.0.0.13", "sink");
  auto big = join(srv.port(), "127.0.0.12", "big");
  ASSERT_TRUE(big.send_bytes(envelopes("sink", 2, 1, 15 * 1024)));
  auto f = big.read_kind(v1::Frame::kNotice, 3s);
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->notice().code(), "rate_limited");
  EXPECT_EQ(f->notice().client_seq(), 2u);
  EXPECT_NE(f->notice().text().find("limits.bytes-per-second"), std::string::npos)
    << f->notice().text();
  // About 14 KiB are missing at 1 KiB/s.
  EXPECT_GT(f->notice().retry_after_ms(), 10'000u);
  EXPECT_LT(f->notice().retry_after_ms(), 16'000u);
  auto e = sink.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->client_seq(), 1u);
  EXPECT_EQ(srv.stats().rate_limited, 1u);
}

TEST(ServerLimits, RepeatedBreachesQuarantineThePrincipalOnEveryConnectionUntilItEnds) {
  test_server srv{[](auto& cfg) {
    cfg.messages_per_second = 5;
    cfg.messages_burst = 5;
    cfg.quarantine_after = 2; // the second breach, at least a second after the first
    cfg.quarantine_window = std::chrono::seconds{10};
    cfg.quarantine_for = std::chrono::seconds{6};
  }};
  auto sink = join(srv.port(), "127.0.0.21", "sink");
  auto flood = join(srv.port(), "127.0.0.20", "flood");
  auto idle = join(srv.port(), "127.0.0.20", "same-address"); // the same principal
  // Flood until the server closes the connection; what it said on the way
  // is collected.
  std::optional<v1::Notice> quarantined;
  int rate_limited = 0;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  uint64_t seq = 1;
  while (!quarantined && std::chrono::steady_clock::now() < deadline) {
    flood.send_bytes(envelopes("sink", 20, seq));
    seq += 20;
    // Paces the flood (and reads what came), it synchronises nothing.
    while (auto f = flood.read(20ms)) {
      if (!f->has_notice())
        continue;
      if (f->notice().code() == "rate_limited")
        ++rate_limited;
      if (f->notice().code() == "quarantined")
        quarantined = f->notice();
    }
  }
  ASSERT_TRUE(quarantined.has_value()) << "not quarantined; rate_limited Notices: " << rate_limited;
  EXPECT_GT(rate_limited, 0);
  EXPECT_EQ(quarantined->severity(), v1::Notice::ERROR);
  EXPECT_EQ(quarantined->retry_after_ms(), 6000u) << "limits.quarantine-for";
  EXPECT_NE(quarantined->text().find("addr:127.0.0.20"), std::string::npos) << quarantined->text();
  flood.close();
  // Its other connection is closed too, with the same Notice.
  std::vector<v1::Frame> before;
  ASSERT_TRUE(idle.wait_closed(5s, &before));
  ASSERT_TRUE(std::any_of(before.begin(), before.end(), [](auto& f) {
    return f.has_notice() && f.notice().code() == "quarantined";
  }));
  EXPECT_EQ(srv.stats().quarantines, 1u);
  // A new connection (a new port) from the same address is refused with the
  // time left; another address is not.
  auto again = raw_client::from_address(srv.port(), "127.0.0.20");
  auto r = again.hello("flood");
  ASSERT_TRUE(r.has_notice()) << r.ShortDebugString();
  EXPECT_EQ(r.notice().code(), "quarantined");
  auto left = std::chrono::milliseconds{r.notice().retry_after_ms()};
  EXPECT_GT(left, 0ms);
  EXPECT_LE(left, 6000ms);
  EXPECT_NE(r.notice().text().find("quarantined for another"), std::string::npos)
    << r.notice().text();
  auto ends = std::chrono::steady_clock::now() + left;
  EXPECT_TRUE(again.wait_closed(2s));
  EXPECT_EQ(srv.stats().quarantine_refused, 1u);
  auto other = join(srv.port(), "127.0.0.22", "other");
  ASSERT_TRUE(other.send_envelope("sink", "unaffected"));
  std::optional<v1::Envelope> e;
  while ((e = sink.read_envelope()) && e->sender() == "flood") // what flood got through
    ;
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "unaffected");
  // Once the time it was told has passed, it is accepted again (a deadline
  // poll, then one attempt).
  ASSERT_TRUE(eventually([&] { return std::chrono::steady_clock::now() >= ends; }, 10s));
  auto back = raw_client::from_address(srv.port(), "127.0.0.20");
  auto w = back.hello("flood");
  EXPECT_TRUE(w.has_welcome()) << "still refused after the time it was told: "
                               << w.ShortDebugString();
}

TEST(ServerLimits, AClientWithThousandsOfConnectionsIsRefusedWhileOthersConnectAndRelay) {
  // One client (one address) opens far more connections than it may; each
  // extra one gets a clear error and is closed, and other addresses are
  // not disturbed. The in-process server shares this process's descriptors.
  auto fds = raise_fd_limit();
  if (fds < 2500)
    GTEST_SKIP() << "needs 2500 descriptors; the limit here is " << fds;
  constexpr uint32_t limit = 50;
  const int n = static_cast<int>(std::min<rlim_t>(10000, (fds - 500) / 2));
  test_server srv{[](auto& cfg) { cfg.max_connections_per_address = limit; }};
  auto sink = join(srv.port(), "127.0.0.31", "sink");
  std::vector<raw_client> held;
  held.reserve(static_cast<size_t>(n));
  // The first `limit` are admitted (they may say Hello); the others are told
  // why. The first says Hello before the crowd arrives: under ThreadSanitizer
  // accepting thousands of connections takes longer than hello()'s wait.
  held.push_back(raw_client::from_address(srv.port(), "127.0.0.30"));
  auto w = held[0].hello("crowd-0");
  EXPECT_TRUE(w.has_welcome()) << w.ShortDebugString();
  for (int i = 1; i < n; ++i)
    held.push_back(raw_client::from_address(srv.port(), "127.0.0.30"));
  int refused = 0;
  for (int i = static_cast<int>(limit); i < n; ++i) {
    auto f = held[static_cast<size_t>(i)].read(15s);
    ASSERT_TRUE(f.has_value() && f->has_notice())
      << "connection " << i << ": " << (f ? f->ShortDebugString() : "nothing");
    EXPECT_EQ(f->notice().code(), "too_many_connections");
    EXPECT_EQ(f->notice().severity(), v1::Notice::ERROR);
    EXPECT_NE(f->notice().text().find("limits.max-connections-per-address is 50"),
              std::string::npos)
      << f->notice().text();
    ++refused;
  }
  EXPECT_EQ(refused, n - static_cast<int>(limit));
  EXPECT_EQ(srv.stats().too_many_connections, static_cast<uint64_t>(n) - limit);
  // Meanwhile another client connects and relays.
  auto other = join(srv.port(), "127.0.0.32", "other");
  ASSERT_TRUE(other.send_envelope("sink", "still served"));
  auto e = sink.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "still served");
  // The admitted connection still works.
  ASSERT_TRUE(held[0].send_envelope("sink", "from the crowd"));
  e = sink.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->sender(), "crowd-0");
  // Closing its connections frees the address's slots.
  held.clear();
  EXPECT_TRUE(eventually([&] {
    auto c = raw_client::from_address(srv.port(), "127.0.0.30");
    return c.hello("crowd-again").has_welcome();
  }));
}
