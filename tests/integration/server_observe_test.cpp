// Observe (feature "observe"): the live trace tap as an agent sees it on the
// wire. Filters by agent, route and trace id; precise refusals
// (invalid_filter, permission_denied); payloads only with the right; and a
// stalled observer never slows relaying, is not cut off, and is later told
// how many events it missed.

#include <gtest/gtest.h>

#include <thread>

#include <fstream>
#include <set>

#include "credentials.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"
#include "wait.hpp"

// Filters are written with designated initializers, leaving the rest default.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

/// A server that traces to a file (the tap is fed by the trace writer).
std::function<void(server::server_config&)>
tracing(const temp_dir& dir, std::function<void(server::server_config&)> more = {}) {
  return [&dir, more](server::server_config& cfg) {
    cfg.trace_enabled = true;
    cfg.trace_file = dir.file("trace.log");
    if (more)
      more(cfg);
  };
}

struct observe_spec {
  std::vector<std::string> agents;
  std::vector<std::string> routes;
  std::string trace_id;
  std::vector<std::string> events;
  uint32_t payload_bytes = 0;
};

v1::Frame observe_frame(uint64_t id, const observe_spec& s) {
  v1::Frame f;
  auto& o = *f.mutable_observe();
  o.set_request_id(id);
  for (auto& a : s.agents)
    o.add_agents(a);
  for (auto& r : s.routes)
    o.add_routes(r);
  o.set_trace_id(s.trace_id);
  for (auto& e : s.events)
    o.add_events(e);
  o.set_payload_bytes(s.payload_bytes);
  return f;
}

/// Sends Observe and returns the answer: the empty TraceEvents that
/// acknowledges it, or a Notice.
std::optional<v1::Frame> start_observing(raw_client& c, uint64_t id, const observe_spec& s) {
  if (!c.send(observe_frame(id, s)))
    return std::nullopt;
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       std::chrono::steady_clock::now() < deadline;) {
    auto f = c.read(1s);
    if (f && (f->has_trace_events() || f->has_notice()))
      return f;
  }
  return std::nullopt;
}

/// Collects trace events (of request `id`) until `done` holds or 5 s pass.
struct collected {
  std::vector<v1::TraceEvent> events;
  uint64_t missed = 0;
  /// The first event of this kind (there are joined events too, ...).
  const v1::TraceEvent* first(const std::string& kind = "relay") const {
    for (auto& e : events)
      if (e.event() == kind)
        return &e;
    return nullptr;
  }
  std::set<uint64_t> ids(const std::string& kind = "relay") const {
    std::set<uint64_t> out;
    for (auto& e : events)
      if (e.event() == kind)
        out.insert(e.message_id());
    return out;
  }
};

bool collect(raw_client& c, uint64_t id, collected& into,
             const std::function<bool(const collected&)>& done,
             std::chrono::milliseconds limit = 5s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done(into)) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    auto f = c.read(200ms);
    if (!f || !f->has_trace_events())
      continue;
    EXPECT_EQ(f->trace_events().request_id(), id);
    into.missed += f->trace_events().missed();
    for (auto& e : f->trace_events().events())
      into.events.push_back(e);
  }
  return true;
}

/// A direct message with a trace id; returns its message id (as the
/// recipient saw it).
uint64_t send_traced(raw_client& from, raw_client& to, const std::string& recipient,
                     const std::string& route, const std::string& trace_id,
                     const std::string& payload = "hi") {
  v1::Frame f;
  auto& e = *f.mutable_envelope();
  e.set_recipient(recipient);
  e.set_route(route);
  e.set_trace_id(trace_id);
  e.set_payload(payload);
  if (!from.send(f))
    return 0;
  auto d = to.read_delivery(5s);
  return d ? d->message_id() : 0;
}

} // namespace

TEST(ServerObserve, ObserversSeeRelayEventsFilteredByAgentRouteAndTrace) {
  temp_dir dir;
  test_server srv{tracing(dir)};
  raw_client alice{srv.port()}, bob{srv.port()}, carol{srv.port()};
  auto w = alice.hello("alice");
  ASSERT_TRUE(w.has_welcome());
  const auto& features = w.welcome().features();
  EXPECT_NE(std::find(features.begin(), features.end(), "observe"), features.end());
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  ASSERT_TRUE(carol.hello("carol").has_welcome());
  raw_client by_agent{srv.port()}, by_route{srv.port()}, by_trace{srv.port()}, all{srv.port()};
  ASSERT_TRUE(by_agent.hello("watch.agent").has_welcome());
  ASSERT_TRUE(by_route.hello("watch.route").has_welcome());
  ASSERT_TRUE(by_trace.hello("watch.trace").has_welcome());
  ASSERT_TRUE(all.hello("watch.all").has_welcome());
  std::string t1(16, '\x11'), t2(16, '\x22');
  for (auto [c, id, spec] : {std::tuple{&by_agent, 1, observe_spec{.agents = {"bob"}}},
                             std::tuple{&by_route, 2, observe_spec{.routes = {"jobs.*"}}},
                             std::tuple{&by_trace, 3, observe_spec{.trace_id = t2}},
                             std::tuple{&all, 4, observe_spec{}}}) {
    auto ack = start_observing(*c, id, spec);
    ASSERT_TRUE(ack && ack->has_trace_events()) << (ack ? ack->ShortDebugString() : "none");
    EXPECT_EQ(ack->trace_events().request_id(), static_cast<uint64_t>(id));
    EXPECT_EQ(ack->trace_events().events_size(), 0);
  }
  auto m1 = send_traced(alice, bob, "bob", "jobs.a", t1);     // agent, route
  auto m2 = send_traced(alice, carol, "carol", "misc", t2);   // trace
  auto m3 = send_traced(carol, bob, "bob", "misc", t1);       // agent
  auto m4 = send_traced(alice, carol, "carol", "jobs.b", t1); // route
  ASSERT_TRUE(m1 && m2 && m3 && m4);
  collected a, r, t, e;
  auto have = [](std::set<uint64_t> want) {
    return [want](const collected& c) { return c.ids() == want; };
  };
  EXPECT_TRUE(collect(all, 4, e, have({m1, m2, m3, m4}))) << e.ids().size();
  EXPECT_TRUE(collect(by_agent, 1, a, have({m1, m3})));
  EXPECT_TRUE(collect(by_route, 2, r, have({m1, m4})));
  EXPECT_TRUE(collect(by_trace, 3, t, have({m2})));
  // Nothing else comes (the events came in one pass with m4's).
  alice.send_envelope("bob", "end");
  ASSERT_TRUE(bob.read_delivery(5s));
  EXPECT_TRUE(collect(by_agent, 1, a, [](auto& c) { return c.ids().size() == 3; }));
  EXPECT_EQ(t.ids(), (std::set<uint64_t>{m2}));
  EXPECT_EQ(r.ids(), (std::set<uint64_t>{m1, m4}));
  // The fields of an event.
  ASSERT_TRUE(e.first());
  auto& ev = *e.first();
  EXPECT_EQ(ev.event(), "relay");
  EXPECT_EQ(ev.sender(), "alice");
  EXPECT_EQ(ev.recipient(), "bob");
  EXPECT_EQ(ev.route(), "jobs.a");
  EXPECT_EQ(ev.trace_id(), t1);
  EXPECT_EQ(ev.payload_size(), 2u);
  EXPECT_EQ(ev.payload(), ""); // not asked for
  EXPECT_GT(ev.ts_unix_nanos(), 0);
  EXPECT_EQ(e.missed, 0u);
  // Stop: nothing more, and the connection stays.
  v1::Frame stop;
  stop.mutable_observe()->set_stop(true);
  ASSERT_TRUE(all.send(stop));
  ASSERT_TRUE(all.ping());
  alice.send_envelope("bob", "after stop");
  auto last = bob.read_delivery(5s);
  ASSERT_TRUE(last);
  collected after;
  EXPECT_TRUE(
    collect(by_agent, 1, after, [&](auto& c) { return c.ids().count(last->message_id()) > 0; }));
  // `all` gets it not (what it still reads was queued before the stop).
  collected stale;
  collect(
    all, 4, stale, [](auto&) { return false; }, 300ms);
  EXPECT_EQ(stale.ids().count(last->message_id()), 0u);
}

TEST(ServerObserve, BadFiltersGetInvalidFilterAndTheConnectionStays) {
  test_server srv;
  raw_client c{srv.port()};
  ASSERT_TRUE(c.hello("watcher").has_welcome());
  struct bad {
    observe_spec spec;
    std::string text;
  };
  std::vector<bad> cases{
    {{.events = {"relay", "teleported"}},
     "unknown event kind 'teleported' in the filter (known: relay, undeliverable, dropped, "
     "rejected, written, gap, joined, left, audience)"},
    {{.routes = {"a..b"}}, "invalid route pattern 'a..b' in the filter: "},
    {{.trace_id = std::string(40, 'x')}, "trace id is 40 bytes; at most 16"},
    {{.agents = std::vector<std::string>(100, "x")},
     "too many agents in the filter: 100; at most 64"},
  };
  uint64_t id = 10;
  for (auto& b : cases) {
    auto answer = start_observing(c, ++id, b.spec);
    ASSERT_TRUE(answer && answer->has_notice()) << (answer ? answer->ShortDebugString() : "none");
    EXPECT_EQ(answer->notice().code(), "invalid_filter");
    EXPECT_EQ(answer->notice().severity(), v1::Notice::WARNING);
    EXPECT_EQ(answer->notice().request_id(), id);
    EXPECT_EQ(answer->notice().text().rfind(b.text, 0), 0u) << answer->notice().text();
  }
  EXPECT_TRUE(c.ping());
  auto ok = start_observing(c, 99, {});
  ASSERT_TRUE(ok && ok->has_trace_events());
}

TEST(ServerObserve, TheObserveRightDecidesWhoMayWatchAndWhoSeesPayloads) {
  temp_dir dir;
  auto path = dir.file("credentials.toml");
  auto token = server::generate_token();
  std::ofstream out{path};
  for (auto [name, level] : {std::pair{"blind", server::observe_level::none},
                             std::pair{"meta", server::observe_level::metadata},
                             std::pair{"full", server::observe_level::payload}}) {
    server::identity id;
    id.name = name;
    id.names = {name};
    id.rights = server::rights::all();
    id.rights.observe = level;
    id.token_hash = server::hash_token(token).value();
    out << server::format_identity(id);
  }
  out.close();
  test_server srv{tracing(dir, [&](server::server_config& cfg) {
    cfg.credentials = path;
    cfg.failed_login_delay = 0ms;
    cfg.trace_payload_bytes = 64;
  })};
  raw_client blind{srv.port()}, meta{srv.port()}, full{srv.port()};
  ASSERT_TRUE(blind.login("blind", {}, token).has_welcome());
  ASSERT_TRUE(meta.login("meta", {}, token).has_welcome());
  ASSERT_TRUE(full.login("full", {}, token).has_welcome());
  auto refused = start_observing(blind, 5, {});
  ASSERT_TRUE(refused && refused->has_notice());
  EXPECT_EQ(refused->notice().code(), "permission_denied");
  EXPECT_EQ(refused->notice().request_id(), 5u);
  EXPECT_EQ(refused->notice().text(),
            "identity 'blind' may not observe traces (its observe right is \"none\")");
  ASSERT_TRUE(start_observing(meta, 6, {.payload_bytes = 100})->has_trace_events());
  ASSERT_TRUE(start_observing(full, 7, {.payload_bytes = 5})->has_trace_events());
  ASSERT_TRUE(meta.send_envelope("full", "secret payload"));
  collected m, f;
  EXPECT_TRUE(collect(meta, 6, m, [](auto& c) { return !c.ids().empty(); }));
  EXPECT_TRUE(collect(full, 7, f, [](auto& c) { return !c.ids().empty(); }));
  ASSERT_TRUE(m.first() && f.first());
  EXPECT_EQ(m.first()->payload(), "");
  EXPECT_EQ(m.first()->payload_size(), 14u);
  EXPECT_EQ(f.first()->payload(), "secre");
  EXPECT_TRUE(f.first()->payload_truncated());
}

TEST(ServerObserve, AnonymousAgentsFollowTraceAnonymousObserve) {
  test_server none{[](server::server_config& cfg) { cfg.trace_anonymous_observe = "none"; }};
  raw_client c{none.port()};
  ASSERT_TRUE(c.hello("anon").has_welcome());
  auto refused = start_observing(c, 1, {});
  ASSERT_TRUE(refused && refused->has_notice());
  EXPECT_EQ(refused->notice().code(), "permission_denied");
  EXPECT_NE(refused->notice().text().find("trace.anonymous-observe"), std::string::npos);
}

TEST(ServerObserve, TooManyObserversAreRefused) {
  test_server srv{[](server::server_config& cfg) { cfg.trace_max_observers = 2; }};
  std::vector<raw_client> cs;
  for (int i = 0; i < 3; ++i) {
    cs.emplace_back(srv.port());
    ASSERT_TRUE(cs.back().hello("w" + std::to_string(i)).has_welcome());
  }
  ASSERT_TRUE(start_observing(cs[0], 1, {})->has_trace_events());
  ASSERT_TRUE(start_observing(cs[1], 1, {})->has_trace_events());
  auto third = start_observing(cs[2], 1, {});
  ASSERT_TRUE(third && third->has_notice());
  EXPECT_EQ(third->notice().code(), "too_many_observers");
  EXPECT_EQ(third->notice().text(), "too many observers (2; trace.max-observers)");
  // An observer that leaves makes room.
  cs[0].close();
  EXPECT_TRUE(eventually([&] {
    auto again = start_observing(cs[2], 2, {});
    return again && again->has_trace_events();
  }));
}

TEST(ServerObserve, AStalledObserverNeverSlowsRelayingAndIsToldWhatItMissed) {
  temp_dir dir;
  test_server srv{tracing(dir, [](server::server_config& cfg) {
    cfg.output_high_water = 256 << 10;
    cfg.max_frame_bytes = 64 << 10;
  })};
  auto stalled = raw_client::with_receive_buffer(srv.port(), 4096);
  ASSERT_TRUE(stalled.hello("stalled", {"nothing.here"}).has_welcome());
  ASSERT_TRUE(start_observing(stalled, 42, {.payload_bytes = 1000})->has_trace_events());
  raw_client alice{srv.port()}, bob{srv.port()};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  // The observer reads nothing while 100000 messages are relayed: their
  // events (about 9 MB) are more than the kernel's socket buffers can hide
  // (net.ipv4.tcp_wmem allows 4 MiB), so the server must drop some. Bob
  // reads each round of 500 before the next is sent, so that he stays
  // below the (small) high-water mark however slow this process runs
  // (sanitizers): only the observer is stalled.
  constexpr int n = 100000;
  constexpr int round = 500;
  std::string payload(200, 'p');
  int got = 0;
  auto start = std::chrono::steady_clock::now();
  for (int sent = 0; sent < n && got == sent;) {
    for (int i = 0; i < round; ++i)
      alice.send_envelope("bob", payload);
    sent += round;
    while (got < sent && bob.read_delivery(10s))
      ++got;
  }
  EXPECT_EQ(got, n) << "relaying stopped behind the stalled observer";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 60s);
  EXPECT_EQ(srv.stats().dropped, 0u);
  // Now it reads: it was not disconnected, and is told what it missed.
  // Each event was either delivered or counted (a batch carries the count
  // of what was dropped before it: more traffic makes the batches come).
  collected c;
  auto poked = std::chrono::steady_clock::now();
  bool told = collect(
    stalled, 42, c,
    [&](const collected& x) {
      if (std::chrono::steady_clock::now() - poked > 100ms) {
        poked = std::chrono::steady_clock::now();
        alice.send_envelope("bob", "more");
      }
      return x.missed + x.ids().size() >= static_cast<size_t>(n);
    },
    20s);
  EXPECT_TRUE(told) << "missed=" << c.missed << " seen=" << c.ids().size();
  EXPECT_GT(c.missed, 0u);
  EXPECT_LT(c.ids().size(), static_cast<size_t>(n));
}
