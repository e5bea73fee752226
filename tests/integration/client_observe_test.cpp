// agent::observe: the live trace tap through the SDK, against a real
// server. Events filtered by agent, route and trace id; refusals as failed
// tasks (invalid_filter, permission_denied); payloads only with the right;
// an observer that falls behind does not hold up relaying and learns how
// many events it missed; cancelling stops the observation.

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "convoke/proto/trace_wire.hpp"
#include "process.hpp"
#include "test_agent.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

std::function<void(server::server_config&)>
tracing(const temp_dir& dir, std::function<void(server::server_config&)> more = {}) {
  return [&dir, more](server::server_config& cfg) {
    cfg.trace_enabled = true;
    cfg.trace_file = dir.file("trace.log");
    if (more)
      more(cfg);
  };
}

std::string outcome(const expected<void>& r) {
  if (r)
    return "ok";
  return std::string{to_string(static_cast<errc>(r.error().code.value()))} + ":" + r.error().text;
}

} // namespace

TEST(ClientObserve, SeesRelaysFilteredByAgentRouteAndTraceUntilCancelled) {
  temp_dir dir;
  test_server srv{tracing(dir)};
  event_log log;
  event_log conn;
  lambda_agent bob{"bob", &conn}, carol{"carol", &conn};
  lambda_agent alice{"alice", &conn};
  lambda_agent watcher{"watcher", &log};
  std::string trace_id;
  task<void> by_agent;
  watcher.on_connected = [&](const session_info& s) {
    log.add(s.has_feature("observe") ? "feature" : "no-feature");
    observe_options o;
    o.agents = {"bob"};
    o.routes = {"jobs.*"};
    o.on_started = [&] { log.add("started"); };
    by_agent = watcher.observe(
      o,
      [&](const trace::event& ev) {
        log.add(fmt::format("ev:{}:{}->{}:{}:{}", proto::trace_kind_name(ev.what), ev.sender,
                            ev.recipient, ev.route, ev.payload));
      },
      [&](uint64_t missed) { log.add(fmt::format("missed:{}", missed)); });
    by_agent.then([&](expected<void> r) { log.add("ended:" + outcome(r)); });
  };
  runtime rt;
  for (auto* a : {&bob, &carol, &alice})
    rt.start(*a, local_options(srv.port()));
  ASSERT_TRUE(conn.wait([](auto& xs) { return std::count(xs.begin(), xs.end(), "connect") >= 3; }));
  rt.start(watcher, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("started")) << testing::PrintToString(log.snapshot());
  EXPECT_EQ(log.count("feature"), 1u);
  ASSERT_TRUE(alice.post([&] {
    alice.send_to("carol", "not about bob"); // another agent
    alice.send_to("bob", "no route");        // no route
    alice.publish("misc", "wrong route");    // bob hears it, on another route
    alice.publish("jobs.a", "right");        // matches
  }));
  ASSERT_TRUE(log.wait_for("ev:relay:alice->:jobs.a:")) << testing::PrintToString(log.snapshot());
  // A second observe while one runs is refused at once.
  event_log second;
  ASSERT_TRUE(watcher.post([&] {
    watcher.observe({}, [](const trace::event&) {}).then([&](expected<void> r) {
      second.add(outcome(r));
    });
  }));
  ASSERT_TRUE(second.wait([](auto& xs) { return !xs.empty(); }));
  EXPECT_EQ(second.snapshot()[0].rfind("invalid_argument:", 0), 0u) << second.snapshot()[0];
  // Cancelling ends it; events after that are not handed over.
  ASSERT_TRUE(watcher.post([&] { by_agent.cancel(); }));
  ASSERT_TRUE(log.wait([](auto& xs) {
    for (auto& x : xs)
      if (x.rfind("ended:cancelled", 0) == 0)
        return true;
    return false;
  }))
    << testing::PrintToString(log.snapshot());
  for (auto& x : log.snapshot()) {
    EXPECT_EQ(x.find("carol"), std::string::npos) << x;
    EXPECT_EQ(x.find("misc"), std::string::npos) << x;
    EXPECT_EQ(x.rfind("ev:relay:alice->bob:", 0), std::string::npos) << x; // no route
  }
  // Observe again, by trace id this time, after a cancel.
  event_log traced;
  ASSERT_TRUE(watcher.post([&] {
    observe_options o;
    o.trace_id = std::string(32, '4');
    o.on_started = [&] { traced.add("started"); };
    (void) watcher.observe(o, [&](const trace::event& ev) { traced.add("ev:" + ev.recipient); });
  }));
  ASSERT_TRUE(traced.wait_for("started"));
  ASSERT_TRUE(alice.post([&] {
    send_options other, same;
    other.trace_id = std::string(32, '3');
    same.trace_id = std::string(32, '4');
    alice.send_to("carol", "untraced", other);
    alice.send_to("bob", "traced", same);
  }));
  ASSERT_TRUE(traced.wait_for("ev:bob")) << testing::PrintToString(traced.snapshot());
  EXPECT_EQ(traced.count("ev:carol"), 0u);
  rt.stop_all();
  rt.wait_for(10s);
}

TEST(ClientObserve, RefusalsFailTheTaskWithTheServersReason) {
  test_server srv{[](server::server_config& cfg) { cfg.trace_anonymous_observe = "none"; }};
  test_server open_srv;
  event_log log;
  lambda_agent blind{"blind", &log}, picky{"picky", &log};
  blind.on_connected = [&](const session_info&) {
    blind.observe({}, [](const trace::event&) {}).then([&](expected<void> r) {
      log.add("blind:" + outcome(r));
    });
  };
  picky.on_connected = [&](const session_info&) {
    observe_options o;
    o.events = {"relay", "teleported"};
    picky.observe(o, [](const trace::event&) {}).then([&](expected<void> r) {
      log.add("picky:" + outcome(r));
    });
    observe_options bad_hex;
  };
  runtime rt;
  rt.start(blind, local_options(srv.port()));
  rt.start(picky, local_options(open_srv.port()));
  auto starts = [&](const std::string& prefix) {
    return log.wait([&](auto& xs) {
      for (auto& x : xs)
        if (x.rfind(prefix, 0) == 0)
          return true;
      return false;
    });
  };
  ASSERT_TRUE(starts("blind:")) << testing::PrintToString(log.snapshot());
  ASSERT_TRUE(starts("picky:")) << testing::PrintToString(log.snapshot());
  EXPECT_TRUE(starts("blind:refused:permission_denied: agents without an identity may not "
                     "observe traces here (trace.anonymous-observe is \"none\")"))
    << testing::PrintToString(log.snapshot());
  EXPECT_TRUE(starts("picky:refused:invalid_filter: unknown event kind 'teleported' in the "
                     "filter (known: relay,"))
    << testing::PrintToString(log.snapshot());
  rt.stop_all();
  rt.wait_for(10s);
}

TEST(ClientObserve, PayloadsOnlyWithThePayloadRight) {
  temp_dir dir;
  auto with = [&](const char* level) {
    return tracing(dir, [level](server::server_config& cfg) {
      cfg.trace_anonymous_observe = level;
      cfg.trace_payload_bytes = 64;
    });
  };
  for (auto level : {"metadata", "payload"}) {
    test_server srv{with(level)};
    event_log log;
    event_log conn;
    lambda_agent sender{"sender", &conn}, receiver{"receiver", &conn}, watcher{"watcher"};
    watcher.on_connected = [&](const session_info&) {
      observe_options o;
      o.agents = {"receiver"};
      o.payload_bytes = 6;
      o.on_started = [&] { log.add("started"); };
      (void) watcher.observe(o, [&](const trace::event& ev) {
        log.add(fmt::format("{}|{}|{}", ev.payload, ev.payload_bytes, ev.payload_truncated));
      });
    };
    runtime rt;
    rt.start(receiver, local_options(srv.port()));
    rt.start(sender, local_options(srv.port()));
    rt.start(watcher, local_options(srv.port()));
    ASSERT_TRUE(
      conn.wait([](auto& xs) { return std::count(xs.begin(), xs.end(), "connect") >= 2; }));
    ASSERT_TRUE(log.wait_for("started"));
    ASSERT_TRUE(sender.post([&] { sender.send_to("receiver", "secret stuff"); }));
    auto want = std::string{level} == "payload" ? "secret|12|true" : "|12|false";
    EXPECT_TRUE(log.wait_for(want)) << level << " " << testing::PrintToString(log.snapshot());
    rt.stop_all();
    rt.wait_for(10s);
  }
}

TEST(ClientObserve, AnObserverThatFallsBehindIsToldWhatItMissedAndRelayingGoesOn) {
  temp_dir dir;
  test_server srv{tracing(dir, [](server::server_config& cfg) {
    cfg.output_high_water = 1 << 20;
    cfg.max_frame_bytes = 64 << 10;
    cfg.trace_payload_bytes = 4000; // big events: the observer falls behind sooner
    cfg.trace_anonymous_observe = "payload";
  })};
  // The watcher's agent code blocks in its first on_event until released:
  // its actor stops taking frames, the SDK stops reading, the server's
  // output to it fills up (a stalled observer). It runs in a runtime of its
  // own, so that the other agents' actors keep running.
  std::mutex mtx;
  std::condition_variable cv;
  bool released = false;
  std::atomic<uint64_t> missed{0};
  std::atomic<uint64_t> seen{0};
  event_log log;
  event_log conn;
  lambda_agent watcher{"watcher"}, sender{"sender", &conn}, receiver{"receiver", &conn};
  std::atomic<int> received{0};
  receiver.on_msg = [&](const message&) { ++received; };
  watcher.on_connected = [&](const session_info&) {
    observe_options o;
    o.agents = {"receiver"};
    o.payload_bytes = 1000;
    o.on_started = [&] { log.add("started"); };
    (void) watcher.observe(
      o,
      [&](const trace::event&) {
        if (seen++ == 0) {
          std::unique_lock guard{mtx};
          cv.wait(guard, [&] { return released; });
        }
      },
      [&](uint64_t n) { missed += n; });
  };
  runtime rt, rt_watch;
  rt.start(receiver, local_options(srv.port()));
  rt.start(sender, local_options(srv.port()));
  rt_watch.start(watcher, local_options(srv.port()));
  ASSERT_TRUE(conn.wait([](auto& xs) { return std::count(xs.begin(), xs.end(), "connect") >= 2; }));
  ASSERT_TRUE(log.wait_for("started"));
  // 20000 messages of 4000 bytes (80 MB of trace events: more than any
  // socket buffers hold), in steps the receiver keeps up with: every one
  // arrives while the observer is stalled.
  std::string payload(4000, 'p');
  constexpr int steps = 40, per_step = 500;
  for (int i = 0; i < steps; ++i) {
    ASSERT_TRUE(sender.post([&] {
      for (int k = 0; k < per_step; ++k)
        sender.send_to("receiver", payload);
    }));
    ASSERT_TRUE(eventually([&] { return received.load() == (i + 1) * per_step; }, 20s))
      << "relaying stalled behind the observer: " << received.load();
  }
  {
    std::lock_guard guard{mtx};
    released = true;
  }
  cv.notify_all();
  // It catches up and learns how many it missed (more traffic brings the
  // batch that carries the count).
  EXPECT_TRUE(eventually(
    [&] {
      if (missed.load() > 0)
        return true;
      sender.post([&] { sender.send_to("receiver", "more"); });
      return false;
    },
    20s));
  EXPECT_GT(missed.load(), 0u);
  EXPECT_LT(seen.load(), static_cast<uint64_t>(steps * per_step));
  EXPECT_EQ(srv.stats().dropped, 0u);
  EXPECT_EQ(srv.stats().slow_consumers, 0u) << "the observer was cut off";
  rt.stop_all();
  rt_watch.stop_all();
  rt.wait_for(10s);
  rt_watch.wait_for(10s);
}
