// The live trace tap's hub (server/src/trace_tap.hpp): filters, bounded
// pending batches, missed counts, audiences, payload rights, the observer
// cap. The tests play the writer thread: they call publish()/end_pass()
// directly; no sockets, no sleeps.

#include <gtest/gtest.h>

#include <thread>

#include "convoke/proto/trace_wire.hpp"
#include "trace_tap.hpp"

// Filters are written with designated initializers, leaving the rest default.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

using namespace convoke;
using namespace convoke::server;

namespace {

/// A subscriber that records what it gets; `busy` plays a slow observer.
struct recorder : tap_subscriber {
  bool busy = false;
  std::vector<std::vector<trace::event>> batches;
  std::vector<uint64_t> missed;

  bool ready() override {
    return !busy;
  }
  void deliver(std::vector<trace::event>&& batch, uint64_t m) override {
    batches.push_back(std::move(batch));
    missed.push_back(m);
  }
  std::vector<trace::event> all() const {
    std::vector<trace::event> out;
    for (auto& b : batches)
      out.insert(out.end(), b.begin(), b.end());
    return out;
  }
  uint64_t missed_sum() const {
    uint64_t n = 0;
    for (auto m : missed)
      n += m;
    return n;
  }
};

trace::event relay(uint64_t id, std::string from, std::string to, std::string route = {},
                   std::string trace_id = {}) {
  trace::event ev;
  ev.what = trace::kind::relay;
  ev.message_id = id;
  ev.sender = std::move(from);
  ev.recipient = std::move(to);
  ev.route = std::move(route);
  ev.trace_id = std::move(trace_id);
  ev.count = 1;
  return ev;
}

trace::event audience(uint64_t n, std::vector<std::string> members) {
  trace::event ev;
  ev.what = trace::kind::audience;
  ev.audience = n;
  ev.recipients = std::move(members);
  ev.count = static_cast<uint32_t>(ev.recipients.size());
  return ev;
}

trace::event broadcast(uint64_t id, std::string from, uint64_t aud, std::string route = {}) {
  auto ev = relay(id, std::move(from), {}, std::move(route));
  ev.audience = aud;
  return ev;
}

tap_filter filter(tap_filter_spec spec = {}) {
  auto f = parse_tap_filter(spec);
  if (!f)
    throw std::runtime_error(f.error().text);
  return *f;
}

std::vector<uint64_t> ids(const std::vector<trace::event>& evs) {
  std::vector<uint64_t> out;
  for (auto& e : evs)
    out.push_back(e.what == trace::kind::audience ? 1000 + e.audience : e.message_id);
  return out;
}

std::string parse_error(tap_filter_spec spec) {
  auto f = parse_tap_filter(spec);
  return f ? std::string{"<accepted>"} : f.error().text;
}

} // namespace

TEST(TraceTapFilter, BadFiltersGetPreciseErrors) {
  EXPECT_EQ(parse_error({.events = {"relay", "sent"}}),
            "unknown event kind 'sent' in the filter (known: relay, undeliverable, dropped, "
            "rejected, written, gap, joined, left, audience)");
  auto route = parse_error({.routes = {"a..b"}});
  EXPECT_EQ(route.rfind("invalid route pattern 'a..b' in the filter: ", 0), 0u) << route;
  auto tail = parse_error({.routes = {"a.>.b"}});
  EXPECT_EQ(tail.rfind("invalid route pattern 'a.>.b' in the filter: ", 0), 0u) << tail;
  EXPECT_EQ(parse_error({.trace_id = std::string(17, 'x')}), "trace id is 17 bytes; at most 16");
  auto name = parse_error({.agents = {"bad name"}});
  EXPECT_EQ(name.rfind("invalid agent name 'bad name' in the filter: ", 0), 0u) << name;
  EXPECT_EQ(parse_error({.agents = std::vector<std::string>(65, "a")}),
            "too many agents in the filter: 65; at most 64");
  EXPECT_EQ(parse_error({.routes = std::vector<std::string>(65, "r")}),
            "too many routes in the filter: 65; at most 64");
  // A hostile name is not echoed in full.
  auto huge = parse_error({.agents = {std::string(100000, 'n')}});
  EXPECT_LT(huge.size(), 400u);
  EXPECT_EQ(parse_error({.agents = {"a"}, .routes = {"w.*", "x.>"}, .events = {"dropped"}}),
            "<accepted>");
}

TEST(TraceTapFilter, AgentsMatchSenderRecipientOrAudienceMembers) {
  auto f = filter({.agents = {"bob"}});
  EXPECT_TRUE(f.matches(relay(1, "bob", "x"), nullptr));
  EXPECT_TRUE(f.matches(relay(1, "x", "bob"), nullptr));
  EXPECT_FALSE(f.matches(relay(1, "x", "y"), nullptr));
  std::vector<std::string> members{"alice", "bob"};
  EXPECT_TRUE(f.matches(broadcast(1, "x", 7), &members));
  EXPECT_FALSE(f.matches(broadcast(1, "x", 7), nullptr));
  auto ev = broadcast(1, "x", 0);
  ev.recipients = {"bob"};
  EXPECT_TRUE(f.matches(ev, nullptr));
}

TEST(TraceTapFilter, RoutesTraceIdsAndKindsNarrow) {
  auto f = filter({.routes = {"weather.*"}, .trace_id = "T1", .events = {"relay", "dropped"}});
  EXPECT_TRUE(f.matches(relay(1, "a", "b", "weather.paris", "T1"), nullptr));
  EXPECT_FALSE(f.matches(relay(1, "a", "b", "weather.eu.paris", "T1"), nullptr));
  EXPECT_FALSE(f.matches(relay(1, "a", "b", "", "T1"), nullptr));
  EXPECT_FALSE(f.matches(relay(1, "a", "b", "weather.paris", "T2"), nullptr));
  auto rejected = relay(1, "a", "b", "weather.paris", "T1");
  rejected.what = trace::kind::rejected;
  EXPECT_FALSE(f.matches(rejected, nullptr));
  // No kinds: everything but audience definitions.
  auto all = filter();
  EXPECT_TRUE(all.matches(rejected, nullptr));
  EXPECT_FALSE(all.matches(audience(1, {"a"}), nullptr));
}

TEST(TraceTap, DeliversFilteredBatchesAtTheEndOfEachPass) {
  trace_tap tap;
  EXPECT_FALSE(tap.active());
  auto bob = std::make_shared<recorder>();
  auto every = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter({.agents = {"bob"}}), bob));
  ASSERT_TRUE(tap.subscribe(filter(), every));
  EXPECT_TRUE(tap.active());
  tap.publish(relay(1, "alice", "bob"));
  tap.publish(relay(2, "alice", "carol"));
  EXPECT_TRUE(bob->batches.empty()); // nothing before end_pass
  tap.end_pass();
  EXPECT_EQ(ids(bob->all()), (std::vector<uint64_t>{1}));
  EXPECT_EQ(ids(every->all()), (std::vector<uint64_t>{1, 2}));
  tap.end_pass(); // nothing new: no empty batches
  EXPECT_EQ(bob->batches.size(), 1u);
  EXPECT_EQ(bob->missed_sum(), 0u);
}

TEST(TraceTap, ASlowSubscriberIsBoundedAndToldWhatItMissed) {
  tap_limits lim;
  lim.max_pending_events = 10;
  trace_tap tap{lim};
  auto slow = std::make_shared<recorder>();
  auto fast = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter(), slow));
  ASSERT_TRUE(tap.subscribe(filter(), fast));
  slow->busy = true;
  for (uint64_t i = 1; i <= 100; ++i) {
    tap.publish(relay(i, "a", "b"));
    if (i % 10 == 0)
      tap.end_pass();
  }
  EXPECT_TRUE(slow->batches.empty());
  EXPECT_EQ(fast->all().size(), 100u); // the other observer lost nothing
  EXPECT_EQ(tap.missed_total(), 90u);
  slow->busy = false;
  tap.publish(relay(101, "a", "b")); // over the bound still: missed
  tap.end_pass();
  ASSERT_EQ(slow->batches.size(), 1u);
  EXPECT_EQ(ids(slow->batches[0]), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(slow->missed[0], 91u);
  tap.publish(relay(102, "a", "b"));
  tap.end_pass();
  EXPECT_EQ(ids(slow->batches[1]), (std::vector<uint64_t>{102}));
  EXPECT_EQ(slow->missed[1], 0u);
}

TEST(TraceTap, PendingBytesAreBoundedToo) {
  tap_limits lim;
  lim.max_pending_bytes = 64 * 1024;
  trace_tap tap{lim};
  auto slow = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter({.payload_bytes = 1 << 20}), slow));
  slow->busy = true;
  for (uint64_t i = 1; i <= 100; ++i) {
    auto ev = relay(i, "a", "b");
    ev.payload = std::string(4096, 'p');
    tap.publish(ev);
  }
  tap.end_pass();
  slow->busy = false;
  tap.end_pass();
  ASSERT_EQ(slow->batches.size(), 1u);
  auto n = slow->batches[0].size();
  EXPECT_GE(n, 10u);
  EXPECT_LE(n, 16u); // 64 KiB of 4 KiB payloads, plus the events themselves
  EXPECT_EQ(slow->missed[0], 100 - n);
}

TEST(TraceTap, MissedAloneIsDeliveredAsAnEmptyBatch) {
  tap_limits lim;
  lim.max_pending_events = 1;
  trace_tap tap{lim};
  auto s = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter(), s));
  s->busy = true;
  tap.publish(relay(1, "a", "b"));
  tap.publish(relay(2, "a", "b"));
  tap.end_pass();
  s->busy = false;
  tap.end_pass();
  tap.end_pass();
  ASSERT_EQ(s->batches.size(), 1u);
  EXPECT_EQ(s->missed[0], 1u);
}

TEST(TraceTap, AnAudienceIsDefinedBeforeItsFirstUseForEachSubscriber) {
  trace_tap tap;
  auto early = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter(), early));
  tap.publish(audience(7, {"b", "c"}));
  tap.publish(broadcast(1, "a", 7));
  tap.publish(broadcast(2, "a", 7));
  tap.end_pass();
  EXPECT_EQ(ids(early->all()), (std::vector<uint64_t>{1007, 1, 2}));
  // A subscriber that comes later still gets the definition first.
  auto late = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter(), late));
  tap.publish(broadcast(3, "a", 7));
  tap.end_pass();
  EXPECT_EQ(ids(late->all()), (std::vector<uint64_t>{1007, 3}));
  EXPECT_EQ(ids(early->all()), (std::vector<uint64_t>{1007, 1, 2, 3}));
  EXPECT_EQ(late->all()[0].recipients, (std::vector<std::string>{"b", "c"}));
  // A redefinition is given again before the next use.
  tap.publish(audience(7, {"d"}));
  tap.publish(broadcast(4, "a", 7));
  tap.end_pass();
  EXPECT_EQ(ids(late->all()), (std::vector<uint64_t>{1007, 3, 1007, 4}));
}

TEST(TraceTap, AgentFiltersResolveAudienceMembers) {
  trace_tap tap;
  auto carol = std::make_shared<recorder>();
  auto dave = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter({.agents = {"carol"}}), carol));
  ASSERT_TRUE(tap.subscribe(filter({.agents = {"dave"}}), dave));
  tap.publish(audience(3, {"bob", "carol"}));
  tap.publish(broadcast(1, "alice", 3));
  tap.end_pass();
  EXPECT_EQ(ids(carol->all()), (std::vector<uint64_t>{1003, 1}));
  EXPECT_TRUE(dave->all().empty());
}

TEST(TraceTap, AudienceDefinitionsAreBounded) {
  tap_limits lim;
  lim.max_audiences = 4;
  trace_tap tap{lim};
  auto s = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter(), s));
  for (uint64_t n = 1; n <= 10; ++n)
    tap.publish(audience(n, {"x"}));
  tap.publish(broadcast(1, "a", 1));  // forgotten: no definition to give
  tap.publish(broadcast(2, "a", 10)); // kept
  tap.end_pass();
  EXPECT_EQ(ids(s->all()), (std::vector<uint64_t>{1, 1010, 2}));
}

TEST(TraceTap, AskingForAudienceEventsGetsThemAll) {
  trace_tap tap;
  auto s = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter({.events = {"audience", "relay"}}), s));
  tap.publish(audience(5, {"x"}));
  tap.publish(broadcast(1, "a", 5));
  tap.end_pass();
  EXPECT_EQ(ids(s->all()), (std::vector<uint64_t>{1005, 1})); // not twice
}

TEST(TraceTap, PayloadsOnlyAsFarAsTheFilterGivesThem) {
  trace_tap tap;
  auto none = std::make_shared<recorder>();
  auto some = std::make_shared<recorder>();
  auto all = std::make_shared<recorder>();
  ASSERT_TRUE(tap.subscribe(filter(), none));
  ASSERT_TRUE(tap.subscribe(filter({.payload_bytes = 4}), some));
  EXPECT_EQ(tap.payload_bytes_wanted(), 4u);
  auto id = tap.subscribe(filter({.payload_bytes = 100}), all);
  ASSERT_TRUE(id);
  EXPECT_EQ(tap.payload_bytes_wanted(), 100u);
  auto ev = relay(1, "a", "b");
  ev.payload = "hello world";
  ev.payload_bytes = 11;
  tap.publish(ev);
  tap.end_pass();
  EXPECT_EQ(none->all()[0].payload, "");
  EXPECT_FALSE(none->all()[0].payload_truncated);
  EXPECT_EQ(none->all()[0].payload_bytes, 11u); // the size is metadata
  EXPECT_EQ(some->all()[0].payload, "hell");
  EXPECT_TRUE(some->all()[0].payload_truncated);
  EXPECT_EQ(all->all()[0].payload, "hello world");
  EXPECT_FALSE(all->all()[0].payload_truncated);
  tap.unsubscribe(*id);
  EXPECT_EQ(tap.payload_bytes_wanted(), 4u);
}

TEST(TraceTap, TheNumberOfSubscribersIsCapped) {
  tap_limits lim;
  lim.max_subscribers = 3;
  trace_tap tap{lim};
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = tap.subscribe(filter(), std::make_shared<recorder>());
    ASSERT_TRUE(id);
    EXPECT_NE(*id, 0u);
    ids.push_back(*id);
  }
  auto refused = tap.subscribe(filter(), std::make_shared<recorder>());
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().text, "too many observers (3; trace.max-observers)");
  tap.unsubscribe(ids[0]);
  EXPECT_TRUE(tap.subscribe(filter(), std::make_shared<recorder>()));
}

TEST(TraceTap, UnsubscribedSubscribersGetNothingMoreAndAreReleased) {
  trace_tap tap;
  auto s = std::make_shared<recorder>();
  auto id = tap.subscribe(filter(), s);
  ASSERT_TRUE(id);
  tap.publish(relay(1, "a", "b"));
  tap.unsubscribe(*id);
  EXPECT_FALSE(tap.active());
  tap.publish(relay(2, "a", "b"));
  tap.end_pass();
  EXPECT_TRUE(s->batches.empty());
  EXPECT_EQ(s.use_count(), 1); // the hub let go of it
  tap.unsubscribe(*id);        // twice: ignored
  tap.unsubscribe(12345);
  EXPECT_EQ(tap.subscribers(), 0u);
}

TEST(TraceTap, HundredsOfSubscribersStayBounded) {
  tap_limits lim;
  lim.max_subscribers = 500;
  lim.max_pending_events = 8;
  trace_tap tap{lim};
  std::vector<std::shared_ptr<recorder>> subs;
  for (int i = 0; i < 500; ++i) {
    subs.push_back(std::make_shared<recorder>());
    subs.back()->busy = true; // nobody reads
    ASSERT_TRUE(tap.subscribe(filter(), subs.back()));
  }
  for (uint64_t i = 1; i <= 1000; ++i)
    tap.publish(relay(i, "a", "b"));
  tap.end_pass();
  EXPECT_EQ(tap.missed_total(), 500u * (1000 - 8));
  for (auto& s : subs)
    s->busy = false;
  tap.end_pass();
  for (auto& s : subs) {
    ASSERT_EQ(s->all().size(), 8u);
    ASSERT_EQ(s->missed[0], 992u);
  }
}

TEST(TraceTap, SubscribeAndUnsubscribeFromOtherThreadsWhileTheWriterRuns) {
  trace_tap tap;
  std::atomic<bool> done{false};
  std::thread writer{[&] {
    uint64_t id = 0;
    while (!done.load()) {
      tap.publish(relay(++id, "a", "b"));
      tap.end_pass();
    }
  }};
  for (int i = 0; i < 2000; ++i) {
    auto s = std::make_shared<recorder>();
    auto id = tap.subscribe(filter(), s);
    ASSERT_TRUE(id);
    tap.unsubscribe(*id);
  }
  done = true;
  writer.join();
  EXPECT_EQ(tap.subscribers(), 0u);
}

TEST(TraceWire, EventsRoundTripThroughTheFrame) {
  trace::event ev = broadcast(9, "alice", 4, "r.x");
  ev.seq = 3;
  ev.boot = "0123456789abcdef";
  ev.recipients = {"b", "c"};
  ev.trace_id = std::string(16, '\x01');
  ev.payload = std::string("a\0b", 3);
  ev.payload_truncated = true;
  ev.reason = "why";
  v1::TraceEvent w;
  proto::to_wire(ev, w);
  EXPECT_EQ(w.event(), "relay");
  auto back = proto::from_wire(w);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->message_id, 9u);
  EXPECT_EQ(back->audience, 4u);
  EXPECT_EQ(back->recipients, ev.recipients);
  EXPECT_EQ(back->payload, ev.payload);
  EXPECT_EQ(back->boot, ev.boot);
  w.set_event("teleported");
  EXPECT_FALSE(proto::from_wire(w));
}
