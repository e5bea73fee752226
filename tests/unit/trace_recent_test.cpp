// The web view's ring of recent trace events and the /tracez query parser
// (server/src/trace_recent.hpp).

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "trace_recent.hpp"

using namespace convoke;
using namespace convoke::server;

namespace {

trace::event relay(uint64_t seq, std::string from, std::string to, std::string route = {},
                   std::string trace_id = {}) {
  trace::event ev;
  ev.what = trace::kind::relay;
  ev.seq = seq;
  ev.boot = "00112233aabbccdd";
  ev.ts_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(seq) * 1000;
  ev.message_id = 100 + seq;
  ev.sender = std::move(from);
  ev.recipient = std::move(to);
  ev.route = std::move(route);
  ev.count = 1;
  ev.trace_id = std::move(trace_id);
  return ev;
}

std::multimap<std::string, std::string>
params(std::initializer_list<std::pair<const std::string, std::string>> p) {
  return {p};
}

std::vector<uint64_t> seqs(const recent_events::answer& a) {
  std::vector<uint64_t> out;
  for (auto& ev : a.events)
    out.push_back(ev.seq);
  return out;
}

tracez_query query(std::initializer_list<std::pair<const std::string, std::string>> p) {
  auto q = parse_tracez_query(params(p));
  EXPECT_TRUE(q) << q.error().text;
  return q ? *q : tracez_query{};
}

} // namespace

TEST(TraceRecent, KeepsTheNewestEventsUpToItsCapacity) {
  recent_events ring{5};
  std::vector<trace::event> batch;
  for (uint64_t s = 1; s <= 8; ++s)
    batch.push_back(relay(s, "a", "b"));
  ring.add(std::move(batch), 3);
  EXPECT_EQ(ring.size(), 5u);
  auto a = ring.query(query({}));
  EXPECT_EQ(seqs(a), (std::vector<uint64_t>{4, 5, 6, 7, 8}));
  EXPECT_EQ(a.oldest, 4u);
  EXPECT_EQ(a.next, 8u);
  EXPECT_EQ(a.missed, 3u);
  EXPECT_EQ(a.boot, "00112233aabbccdd");
}

TEST(TraceRecent, AfterPagesOldestFirstAndSaysWhereToContinue) {
  recent_events ring;
  std::vector<trace::event> batch;
  for (uint64_t s = 1; s <= 10; ++s)
    batch.push_back(relay(s, s % 2 ? "odd" : "even", "z"));
  ring.add(std::move(batch), 0);
  auto a = ring.query(query({{"after", "3"}, {"limit", "4"}}));
  EXPECT_EQ(seqs(a), (std::vector<uint64_t>{4, 5, 6, 7}));
  EXPECT_TRUE(a.more);
  EXPECT_EQ(a.next, 7u);
  auto b = ring.query(query({{"after", "7"}, {"limit", "4"}}));
  EXPECT_EQ(seqs(b), (std::vector<uint64_t>{8, 9, 10}));
  EXPECT_FALSE(b.more);
  EXPECT_EQ(b.next, 10u);
  // A filter that matches few: next still advances past what was looked at.
  auto c = ring.query(query({{"after", "0"}, {"agent", "even"}, {"limit", "2"}}));
  EXPECT_EQ(seqs(c), (std::vector<uint64_t>{2, 4}));
  EXPECT_TRUE(c.more);
  EXPECT_EQ(c.next, 4u);
  auto d = ring.query(query({{"after", "10"}}));
  EXPECT_TRUE(d.events.empty());
  EXPECT_EQ(d.next, 10u);
  // Newest first page without after, limited.
  EXPECT_EQ(seqs(ring.query(query({{"limit", "2"}}))), (std::vector<uint64_t>{9, 10}));
}

TEST(TraceRecent, FiltersByAgentRouteAndTrace) {
  recent_events ring;
  std::vector<trace::event> batch;
  batch.push_back(relay(1, "alice", "bob", "orders.new", std::string("\x01\x02", 2)));
  batch.push_back(relay(2, "bob", "alice", "orders.done", std::string("\x01\x02", 2)));
  batch.push_back(relay(3, "carol", "", "news.eu.paris"));
  batch.back().recipients = {"dave", "erin"};
  batch.push_back(relay(4, "dave", "erin", "chat"));
  ring.add(std::move(batch), 0);
  EXPECT_EQ(seqs(ring.query(query({{"agent", "alice"}}))), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(seqs(ring.query(query({{"agent", "erin"}}))), (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(seqs(ring.query(query({{"agent", "bob,carol"}}))), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(ring.query(query({{"agent", "bob"}, {"agent", "carol"}}))),
            (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(ring.query(query({{"route", "orders.*"}}))), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(seqs(ring.query(query({{"route", "news.>"}}))), (std::vector<uint64_t>{3}));
  EXPECT_EQ(seqs(ring.query(query({{"route", "orders.new"}, {"agent", "bob"}}))),
            (std::vector<uint64_t>{1}));
  EXPECT_EQ(seqs(ring.query(query({{"trace", "0102"}}))), (std::vector<uint64_t>{1, 2}));
  EXPECT_TRUE(ring.query(query({{"trace", "0103"}})).events.empty());
  EXPECT_TRUE(ring.query(query({{"agent", "nobody"}})).events.empty());
}

TEST(TraceRecent, AConversationIsEveryHeldEventOfItsTrace) {
  recent_events ring;
  std::vector<trace::event> batch;
  std::string t1(16, '\x11'), t2(16, '\x22');
  batch.push_back(relay(1, "client", "server", "rpc", t1));
  batch.push_back(relay(2, "other", "x", "rpc", t2));
  batch.push_back(relay(3, "server", "db", "rpc", t1));
  batch.push_back(relay(4, "db", "server", "rpc", t1));
  batch.push_back(relay(5, "server", "client", "rpc", t1));
  ring.add(std::move(batch), 0);
  auto q = parse_tracez_query(params({{"trace", std::string(32, '1')}}), true);
  ASSERT_TRUE(q) << q.error().text;
  EXPECT_EQ(seqs(ring.conversation(*q)), (std::vector<uint64_t>{1, 3, 4, 5}));
  auto j = nlohmann::json::parse(recent_events::to_json(ring.conversation(*q), "11ab"));
  EXPECT_EQ(j["trace"], "11ab");
  EXPECT_EQ(j["events"].size(), 4u);
  EXPECT_EQ(j["events"][0]["trace_id"], std::string(32, '1'));
  EXPECT_EQ(j["events"][3]["from"], "server");
  EXPECT_EQ(j["events"][3]["to"], "client");
}

TEST(TraceRecent, BroadcastsGetTheirAudiencesRecipients) {
  recent_events ring{recent_events::limits{10, 2}};
  std::vector<trace::event> batch;
  for (uint64_t n = 1; n <= 3; ++n) {
    trace::event aud;
    aud.what = trace::kind::audience;
    aud.seq = n;
    aud.audience = n;
    aud.recipients = {"r" + std::to_string(n), "s" + std::to_string(n)};
    batch.push_back(aud);
  }
  auto b3 = relay(4, "caster", "", "news");
  b3.audience = 3;
  b3.count = 2;
  auto b1 = relay(5, "caster", "", "news");
  b1.audience = 1; // forgotten: only 2 audiences are kept
  b1.count = 2;
  batch.push_back(b3);
  batch.push_back(b1);
  ring.add(std::move(batch), 0);
  auto a = ring.query(query({}));
  ASSERT_EQ(seqs(a), (std::vector<uint64_t>{4, 5})) << "audience events are not in the ring";
  EXPECT_EQ(a.events[0].recipients, (std::vector<std::string>{"r3", "s3"}));
  EXPECT_EQ(a.recipients_more, (std::vector<size_t>{0, 0}));
  EXPECT_TRUE(a.events[1].recipients.empty());
  EXPECT_EQ(seqs(ring.query(query({{"agent", "s3"}}))), (std::vector<uint64_t>{4}));
  auto j = nlohmann::json::parse(recent_events::to_json(a))["events"][0];
  EXPECT_EQ(j["to"], "*");
  EXPECT_EQ(j["fanout"], 2);
  EXPECT_EQ(j["audience"], 3);
  EXPECT_EQ(j["recipients"], nlohmann::json::array({"r3", "s3"}));
}

TEST(TraceRecent, ClearForgetsEverythingAndOldOrRepeatedSeqsAreIgnored) {
  recent_events ring;
  std::vector<trace::event> batch{relay(5, "a", "b"), relay(5, "a", "b"), relay(3, "a", "b")};
  ring.add(std::move(batch), 2);
  EXPECT_EQ(ring.size(), 1u);
  ring.clear();
  EXPECT_EQ(ring.size(), 0u);
  auto a = ring.query(query({}));
  EXPECT_EQ(a.missed, 0u);
  EXPECT_EQ(a.next, 0u);
  EXPECT_EQ(a.oldest, 0u);
}

TEST(TraceRecent, EventsAreJsonTraceLines) {
  auto ev = relay(7, "alice", "bob", "r", std::string("\xab\xcd", 2));
  ev.request_id = 9;
  recent_events ring;
  ring.add({ev}, 0);
  auto text = recent_events::to_json(ring.query(query({})));
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["boot"], ev.boot);
  EXPECT_EQ(j["next"], 7);
  EXPECT_EQ(j["missed"], 0);
  EXPECT_EQ(j["oldest"], 7);
  EXPECT_EQ(j["more"], false);
  EXPECT_FALSE(j.contains("trace"));
  ASSERT_EQ(j["events"].size(), 1u);
  EXPECT_NE(text.find(trace::format_json(ev)), std::string::npos)
    << "the event is exactly its trace file line";
  j = j["events"][0];
  EXPECT_EQ(j["event"], "relay");
  EXPECT_EQ(j["seq"], 7);
  EXPECT_EQ(j["message_id"], 107);
  EXPECT_EQ(j["from"], "alice");
  EXPECT_EQ(j["to"], "bob");
  EXPECT_EQ(j["trace_id"], "abcd");
  EXPECT_EQ(j["request_id"], 9);
  EXPECT_EQ(j["ts"], "2023-11-14T22:13:20.000007Z");
  for (auto* absent : {"in_reply_to", "payload", "reason", "fanout", "audience", "bytes",
                       "last_message_id", "recipients", "span_id"})
    EXPECT_FALSE(j.contains(absent)) << absent;
}

TEST(TraceRecent, BadQueryParametersAreRefusedWithAPreciseText) {
  auto error = [](std::initializer_list<std::pair<const std::string, std::string>> p,
                  bool conversation = false) {
    auto q = parse_tracez_query(params(p), conversation);
    return q ? std::string{"accepted"} : q.error().text;
  };
  EXPECT_EQ(error({{"after", "x"}}), "after: 'x' is not a non-negative integer");
  EXPECT_EQ(error({{"after", "-1"}}), "after: '-1' is not a non-negative integer");
  EXPECT_EQ(error({{"after", ""}}), "after: '' is not a non-negative integer");
  EXPECT_EQ(error({{"limit", "1001"}}), "limit: 1001 is above 1000");
  EXPECT_EQ(error({{"limit", "0"}}), "limit: 0 is below 1");
  EXPECT_EQ(error({{"trace", "abc"}}),
            "trace: 'abc' is not a trace id (2 to 32 hex digits, an even number)");
  EXPECT_EQ(error({{"trace", std::string(34, 'a')}}),
            "trace: '" + std::string(34, 'a')
              + "' is not a trace id (2 to 32 hex digits, an even number)");
  EXPECT_EQ(error({{"trace", "zz"}}), "trace: 'zz' has a character that is not a hex digit");
  EXPECT_EQ(error({{"agent", ""}}), "agent: an empty name");
  EXPECT_EQ(error({{"agent", "a,,b"}}), "agent: an empty name");
  EXPECT_EQ(error({{"agent", "a b"}}), "agent: 'a b' has spaces or control characters");
  EXPECT_EQ(error({{"route", std::string(200, 'r')}}),
            "route: '" + std::string(32, 'r') + "...' is longer than 128 characters");
  EXPECT_EQ(error({{"sort", "name"}}),
            "unknown parameter 'sort' (known: after, agent, route, trace, limit)");
  std::string many;
  for (int i = 0; i < 65; ++i)
    many += (i ? "," : "") + std::to_string(i);
  EXPECT_EQ(error({{"agent", many}}), "agent: more than 64 values");
  EXPECT_EQ(error({}, true), "trace: required (the conversation's trace id, hex)");
  EXPECT_EQ(error({{"after", "1"}, {"trace", "ab"}}, true),
            "unknown parameter 'after' (known: trace, limit)");
  EXPECT_EQ(error({{"trace", "ab"}, {"limit", "5"}}, true), "accepted");
  EXPECT_EQ(error({{"after", "18446744073709551615"}, {"agent", "x"}, {"route", "a.>"}}),
            "accepted");
}

TEST(TraceRecent, TheFeedSubscribesOnTheFirstRequestAndLetsGoWhenIdle) {
  std::vector<std::string> calls;
  std::shared_ptr<recent_events> fed;
  uint64_t next_id = 7;
  {
    recent_feed feed{{[&](std::shared_ptr<recent_events> r) -> expected<uint64_t> {
                        fed = std::move(r);
                        calls.push_back("subscribe");
                        return next_id++;
                      },
                      [&](uint64_t id) { calls.push_back("unsubscribe " + std::to_string(id)); }},
                     std::chrono::seconds{60}};
    recent_feed::clock::time_point t0{std::chrono::hours{1}};
    feed.expire(t0);
    EXPECT_TRUE(calls.empty()) << "nothing to give up before the first request";
    auto touched = feed.touch(t0);
    ASSERT_TRUE(touched);
    auto ring = *touched;
    EXPECT_EQ(ring, fed);
    EXPECT_TRUE(feed.subscribed());
    ring->add({relay(1, "a", "b")}, 0);
    feed.touch(t0 + std::chrono::seconds{30});
    feed.expire(t0 + std::chrono::seconds{89});
    EXPECT_EQ(calls, (std::vector<std::string>{"subscribe"})) << "59 s since the last request";
    feed.expire(t0 + std::chrono::seconds{90});
    EXPECT_EQ(calls, (std::vector<std::string>{"subscribe", "unsubscribe 7"}));
    EXPECT_FALSE(feed.subscribed());
    EXPECT_EQ(ring->size(), 0u) << "the ring is cleared when the feed stops";
    feed.touch(t0 + std::chrono::seconds{100});
    EXPECT_EQ(calls.back(), "subscribe");
  }
  EXPECT_EQ(calls.back(), "unsubscribe 8") << "the destructor gives the subscription up";
}

TEST(TraceRecent, AFeedTheTapRefusesSaysWhyAndTriesAgainOnTheNextRequest) {
  int tries = 0;
  recent_feed feed{{[&](std::shared_ptr<recent_events>) -> expected<uint64_t> {
                      if (++tries == 1)
                        return fail(std::errc::resource_unavailable_try_again,
                                    "too many observers (64; trace.max-observers)");
                      return 3;
                    },
                    [](uint64_t) {}}};
  recent_feed::clock::time_point t0{};
  auto first = feed.touch(t0);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().text, "too many observers (64; trace.max-observers)");
  EXPECT_FALSE(feed.subscribed());
  EXPECT_TRUE(feed.touch(t0));
  EXPECT_TRUE(feed.subscribed());
  EXPECT_EQ(tries, 2);
}

TEST(TraceRecent, LargeAudiencesAreHeldOnceBoundedAndShownInPart) {
  // 3 audiences of 1000 names, at most 2500 names held: the oldest goes.
  recent_events ring{recent_events::limits{100, 10, 2500, 5}};
  std::vector<trace::event> batch;
  uint64_t seq = 0;
  for (uint64_t n = 1; n <= 3; ++n) {
    trace::event aud;
    aud.what = trace::kind::audience;
    aud.seq = ++seq;
    aud.audience = n;
    for (int i = 999; i >= 0; --i)
      aud.recipients.push_back("a" + std::to_string(n) + "-" + std::to_string(i));
    batch.push_back(aud);
    auto b = relay(++seq, "caster", "", "news");
    b.audience = n;
    b.count = 1000;
    batch.push_back(b);
  }
  ring.add(std::move(batch), 0);
  auto a = ring.query(query({}));
  ASSERT_EQ(a.events.size(), 3u);
  EXPECT_TRUE(a.events[0].recipients.empty()) << "audience 1 was forgotten (too many names)";
  EXPECT_EQ(a.recipients_more[0], 0u);
  EXPECT_EQ(a.events[1].recipients.size(), 5u);
  EXPECT_EQ(a.recipients_more[1], 995u);
  EXPECT_EQ(a.events[2].recipients.front(), "a3-0");
  auto j = nlohmann::json::parse(recent_events::to_json(a));
  EXPECT_EQ(j["events"][2]["recipients"].size(), 5u);
  EXPECT_EQ(j["events"][2]["recipients_more"], 995);
  EXPECT_FALSE(j["events"][0].contains("recipients_more"));
  // An agent filter finds a member that is not among the names shown.
  EXPECT_EQ(seqs(ring.query(query({{"agent", "a2-777"}}))), (std::vector<uint64_t>{4}));
  EXPECT_TRUE(ring.query(query({{"agent", "a1-777"}})).events.empty());
}
