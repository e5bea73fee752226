// End to end: a cluster of three real convoke-server processes on loopback
// (docs/cluster.md), agents of the real SDK (and, where the exact frames
// matter, the raw protocol client) on different nodes. Faults are real
// signals: SIGKILL, SIGSTOP/SIGCONT, SIGTERM. Nothing waits by sleeping:
// the mesh is awaited through what the nodes report (/varz, logs), the
// directory through ListAgents, deliveries through the agents' event logs.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <future>
#include <map>
#include <mutex>
#include <set>

#include "cluster_harness.hpp"
#include "convoke/client.hpp"
#include "raw_client.hpp"
#include "test_agent.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

/// Slack on top of a detection time: the machine is shared and loaded.
constexpr auto slack = 3s;

/// An SDK agent with an event log ("message:<payload>", "notice:<code>",
/// "connect", "disconnect:<code>", ...) and the notices and messages it got.
class member {
public:
  explicit member(std::string name, std::vector<std::string> routes = {}) : agent(std::move(name)) {
    // The log gets each event after it was kept: a test that waited for
    // "message:x" finds x in messages().
    agent.on_setup = [this, routes] {
      for (auto& r : routes)
        agent.subscribe(r);
    };
    agent.on_connected
      = [this](const session_info& s) { log.add(s.reconnected ? "reconnect" : "connect"); };
    agent.on_disconnected = [this](const disconnect_info& d) { log.add("disconnect:" + d.code); };
    agent.on_note = [this](const notice& n) {
      {
        std::lock_guard guard{mtx_};
        notices_.push_back(n);
      }
      log.add("notice:" + n.code);
    };
    agent.on_msg = [this](const message& m) {
      {
        std::lock_guard guard{mtx_};
        messages_.push_back(m);
      }
      log.add("message:" + m.payload);
      if (also)
        also(m);
    };
  }

  std::vector<notice> notices() const {
    std::lock_guard guard{mtx_};
    return notices_;
  }
  std::vector<message> messages() const {
    std::lock_guard guard{mtx_};
    return messages_;
  }
  /// The first message with this payload (an empty message if none).
  message message_with(const std::string& payload) const {
    std::lock_guard guard{mtx_};
    for (auto& m : messages_)
      if (m.payload == payload)
        return m;
    return {};
  }
  std::string notice_texts(const std::string& code) const {
    std::string out;
    for (auto& n : notices())
      if (n.code == code)
        out += n.text + "\n";
    return out;
  }

  event_log log;
  lambda_agent agent;
  /// Called on the agent after each message was recorded (optional).
  std::function<void(const message&)> also;

private:
  mutable std::mutex mtx_;
  std::vector<notice> notices_;
  std::vector<message> messages_;
};

/// Starts `m` on node `n` and waits for its Welcome.
void join(runtime& rt, member& m, cluster_node& n) {
  rt.start(m.agent, local_options(n.port()));
  ASSERT_TRUE(m.log.wait_for("connect", 10s))
    << m.agent.name() << " on " << n.name() << ": " << testing::PrintToString(m.log.snapshot());
}

/// ListAgents through `m`'s agent: all names, or nullopt on failure.
std::optional<std::vector<std::string>> listed(member& m, const std::string& prefix = {}) {
  auto done = std::make_shared<std::promise<expected<agent_list>>>();
  auto got = done->get_future();
  if (!m.agent.post([&m, prefix, done] {
        m.agent.list_agents(prefix).then(
          [done](expected<agent_list> r) { done->set_value(std::move(r)); });
      }))
    return std::nullopt;
  if (got.wait_for(5s) != std::future_status::ready)
    return std::nullopt;
  auto r = got.get();
  if (!r)
    return std::nullopt;
  return r->names;
}

bool has(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

/// Waits until `m`'s node lists every name of `present` and none of
/// `absent`.
bool wait_listed(member& m, const std::vector<std::string>& present,
                 const std::vector<std::string>& absent = {},
                 std::chrono::milliseconds timeout = 10s) {
  auto holds = [&] {
    auto names = listed(m);
    if (!names)
      return false;
    for (auto& p : present)
      if (!has(*names, p))
        return false;
    for (auto& a : absent)
      if (has(*names, a))
        return false;
    return true;
  };
  return eventually(paced(holds, 5ms), timeout);
}

std::string listing(member& m) {
  auto names = listed(m);
  return names ? testing::PrintToString(*names) : "(no answer)";
}

/// Runs `fn` on `m`'s agent and waits until it ran.
void on(member& m, std::function<void(lambda_agent&)> fn) {
  auto done = std::make_shared<std::promise<void>>();
  auto ran = done->get_future();
  ASSERT_TRUE(m.agent.post([&m, fn = std::move(fn), done] {
    fn(m.agent);
    done->set_value();
  }));
  ASSERT_EQ(ran.wait_for(10s), std::future_status::ready);
}

/// A raw protocol client on `n` named `name`; its Welcome's resume token in
/// `token` (if given).
raw_client raw_join(cluster_node& n, const std::string& name, std::string* token = nullptr) {
  raw_client c{n.port()};
  auto w = c.hello(name);
  EXPECT_TRUE(w.has_welcome()) << name << " on " << n.name() << ": " << w.ShortDebugString();
  if (token)
    *token = w.welcome().resume_token();
  return c;
}

/// Starts a cluster and waits for its full mesh.
std::unique_ptr<test_cluster> mesh(std::vector<std::string> names = {"nodeA", "nodeB", "nodeC"}) {
  auto c = std::make_unique<test_cluster>(std::move(names));
  std::string why;
  EXPECT_TRUE(c->wait_mesh(15s, &why)) << "the mesh did not form:\n" << why;
  return c;
}

/// A trace event's `nodes` ("A>B,C": from A on to B and C) with the
/// targets sorted; "" if it has none.
std::string crossing(const nlohmann::json& event) {
  auto text = event.value("nodes", std::string{});
  auto gt = text.find('>');
  if (gt == std::string::npos)
    return text;
  std::vector<std::string> to;
  std::string rest = text.substr(gt + 1);
  for (size_t at = 0; at <= rest.size();) {
    auto comma = std::min(rest.find(',', at), rest.size());
    to.push_back(rest.substr(at, comma - at));
    at = comma + 1;
  }
  std::sort(to.begin(), to.end());
  std::string out = text.substr(0, gt + 1);
  for (size_t i = 0; i < to.size(); ++i)
    out += (i ? "," : "") + to[i];
  return out;
}

std::vector<nlohmann::json> events_of(const std::vector<nlohmann::json>& trace,
                                      const std::string& event, uint64_t message_id) {
  std::vector<nlohmann::json> out;
  for (auto& t : trace)
    if (t.value("event", "") == event && t.value("message_id", uint64_t{0}) == message_id)
      out.push_back(t);
  return out;
}

} // namespace

// -- one namespace ------------------------------------------------------------

TEST(Cluster, TheMeshFormsFromOneSeedEach) {
  // nodeC's only seed is nodeB, nodeB's only seed is nodeA: nodeA and nodeC
  // learn of each other through the handshake.
  auto c = mesh();
  for (size_t i = 0; i < c->size(); ++i)
    EXPECT_TRUE((*c)[i].live()) << (*c)[i].name() << " died: " << (*c)[i].log();
  auto v = (*c)[0].varz();
  ASSERT_TRUE(v.is_object());
  EXPECT_TRUE(v.contains("cluster")) << "/varz has no cluster section: " << v.dump();
  if (v.contains("cluster")) {
    EXPECT_EQ(v["cluster"].value("name", ""), c->name());
    EXPECT_EQ(v["cluster"].value("node", ""), "nodeA");
  }
}

TEST(Cluster, ASeedThatIsNotUpYetIsTriedAgainUntilItIs) {
  // nodeA's cluster port, then nodeA gone (nobody had connected to it, so
  // the port is free at once); nodeB starts with it as its only seed, and
  // nodeA comes back there: only nodeB's retries (cluster.retry) can join
  // them, nodeA's only seed is itself (docs/cluster.md: ignored).
  test_cluster c{{"nodeA"}};
  auto& a = c[0];
  auto seed = a.cluster_address();
  a.kill9();
  auto& b = c.add("nodeB", {seed});
  ASSERT_TRUE(b.live()) << b.log();
  a.start({seed}, {}, seed); // its own address as its seed: ignored
  std::string why;
  ASSERT_TRUE(c.wait_mesh(15s, &why)) << why;
  member on_a{"on-a"}, on_b{"on-b"};
  runtime rt;
  join(rt, on_a, a);
  join(rt, on_b, b);
  ASSERT_TRUE(wait_listed(on_a, {"on-b"})) << listing(on_a);
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("on-b", "joined-late")); });
  EXPECT_TRUE(on_b.log.wait_for("message:joined-late", 10s));
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, NodesOfAnotherClusterOrWithATakenNodeNameAreRefused) {
  test_cluster c{{"nodeA"}};
  auto& a = c[0];
  test_cluster other{{}};
  auto& stranger = other.add("nodeX", {a.cluster_address()});
  auto& twin = c.add("nodeA", {a.cluster_address()}); // same cluster, same node name
  ASSERT_EQ(other.size(), 1u);
  // nodeA's log line: "cluster node refused node=X addr=... reason=...".
  auto refusal = [&](const std::string& node) {
    auto log = a.log();
    auto at = log.find("cluster node refused node=" + node + " ");
    return at == std::string::npos ? std::string{} : log.substr(at, log.find('\n', at) - at);
  };
  ASSERT_TRUE(eventually(paced([&] { return !refusal("nodeX").empty(); }), 10s)) << a.log();
  EXPECT_NE(refusal("nodeX").find("cluster name"), std::string::npos) << refusal("nodeX");
  ASSERT_TRUE(eventually(paced([&] { return !refusal("nodeA").empty(); }), 10s)) << a.log();
  EXPECT_NE(refusal("nodeA").find("node name"), std::string::npos) << refusal("nodeA");
  EXPECT_TRUE(a.peers_up().empty()) << c.describe();
  EXPECT_TRUE(stranger.peers_up().empty()) << other.describe();
  EXPECT_TRUE(twin.peers_up().empty()) << c.describe();
  EXPECT_TRUE(stranger.live());
}

TEST(Cluster, BroadcastCrossesToEveryNodeOnceAndRoutesFilterAcrossNodes) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member sender{"sender"}, local{"local"}, on_b{"on-b"}, on_c{"on-c"}, xy{"xy", {"x.y"}};
  runtime rt;
  join(rt, sender, a);
  join(rt, local, a);
  join(rt, on_b, b);
  join(rt, on_c, cc);
  join(rt, xy, cc);
  std::vector<std::string> all{"sender", "local", "on-b", "on-c", "xy"};
  ASSERT_TRUE(wait_listed(sender, all)) << listing(sender);
  ASSERT_TRUE(wait_listed(on_b, all)) << listing(on_b);
  ASSERT_TRUE(wait_listed(on_c, all)) << listing(on_c);

  on(sender, [](lambda_agent& s) {
    EXPECT_FALSE(s.broadcast("to-all"));
    EXPECT_FALSE(s.publish("x.y", "on-xy"));
    EXPECT_FALSE(s.publish("x.z", "on-xz"));
    // Per-sender order: once these are in, everything before them is.
    for (auto* to : {"local", "on-b", "on-c", "xy"})
      EXPECT_FALSE(s.send_to(to, "sentinel"));
  });
  for (auto* m : {&local, &on_b, &on_c, &xy})
    ASSERT_TRUE(m->log.wait_for("message:sentinel", 10s))
      << m->agent.name() << ": " << testing::PrintToString(m->log.snapshot());
  for (auto* m : {&local, &on_b, &on_c}) {
    EXPECT_EQ(m->log.count("message:to-all"), 1u) << m->agent.name();
    EXPECT_EQ(m->log.count("message:on-xy"), 1u) << m->agent.name();
    EXPECT_EQ(m->log.count("message:on-xz"), 1u) << m->agent.name();
  }
  EXPECT_EQ(xy.log.count("message:on-xy"), 1u) << testing::PrintToString(xy.log.snapshot());
  EXPECT_EQ(xy.log.count("message:to-all"), 0u) << "xy subscribes to x.y only";
  EXPECT_EQ(xy.log.count("message:on-xz"), 0u) << "xy subscribes to x.y only";
  EXPECT_EQ(sender.log.count("message:to-all"), 0u) << "not back to the sender";
  auto got = on_b.message_with("on-xy");
  EXPECT_EQ(got.sender, "sender");
  EXPECT_EQ(got.route, "x.y");
  EXPECT_TRUE(got.recipient.empty());
  // And from the other direction: a route subscriber on nodeA, a publisher
  // on nodeC.
  on(on_c, [](lambda_agent& s) {
    EXPECT_FALSE(s.publish("x.y", "from-c"));
    EXPECT_FALSE(s.send_to("xy", "sentinel-c"));
    EXPECT_FALSE(s.send_to("local", "sentinel-c"));
  });
  ASSERT_TRUE(xy.log.wait_for("message:sentinel-c", 10s));
  ASSERT_TRUE(local.log.wait_for("message:sentinel-c", 10s));
  EXPECT_EQ(xy.log.count("message:from-c"), 1u);
  EXPECT_EQ(local.log.count("message:from-c"), 1u);
  EXPECT_TRUE(sender.log.wait_for("message:from-c", 10s));
  EXPECT_EQ(on_b.notices().size() + on_c.notices().size() + sender.notices().size(), 0u)
    << sender.notice_texts("node_unreachable");
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Cluster, DirectMessagesAndRequestsReachANameOnAnotherNode) {
  auto c = mesh();
  member alice{"alice"}, bob{"bob"}, carol{"carol"};
  bob.also = [&](const message& m) {
    if (m.is_request())
      bob.agent.reply(m, "pong:" + m.payload);
  };
  runtime rt;
  join(rt, alice, (*c)[0]);
  join(rt, bob, (*c)[1]);
  join(rt, carol, (*c)[2]);
  ASSERT_TRUE(wait_listed(alice, {"alice", "bob", "carol"})) << listing(alice);
  ASSERT_TRUE(wait_listed(carol, {"alice", "bob", "carol"})) << listing(carol);

  std::promise<expected<message>> reply;
  auto reply_f = reply.get_future();
  on(alice, [&](lambda_agent& s) {
    EXPECT_FALSE(s.send_to("bob", "to-bob"));
    EXPECT_FALSE(s.send_to("carol", "to-carol"));
    EXPECT_FALSE(s.send_to("nobody", "to-nobody"));
    s.request("bob", "ping", 5s).then([&](expected<message> r) { reply.set_value(r); });
  });
  on(carol, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("alice", "carol-to-alice")); });
  ASSERT_TRUE(bob.log.wait_for("message:to-bob", 10s));
  ASSERT_TRUE(carol.log.wait_for("message:to-carol", 10s));
  ASSERT_TRUE(alice.log.wait_for("message:carol-to-alice", 10s));
  auto m = bob.message_with("to-bob");
  EXPECT_EQ(m.sender, "alice");
  EXPECT_EQ(m.recipient, "bob");
  EXPECT_EQ(alice.message_with("carol-to-alice").sender, "carol");
  ASSERT_EQ(reply_f.wait_for(10s), std::future_status::ready);
  auto r = reply_f.get();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->payload, "pong:ping");
  EXPECT_EQ(r->sender, "bob");
  // A name no node holds: unknown_recipient, to the sender.
  ASSERT_TRUE(alice.log.wait_for("notice:unknown_recipient", 10s))
    << testing::PrintToString(alice.log.snapshot());
  EXPECT_EQ(bob.log.count("message:to-nobody") + carol.log.count("message:to-nobody"), 0u);
  EXPECT_EQ(bob.log.count("message:to-bob"), 1u);
  EXPECT_EQ(carol.log.count("message:to-carol"), 1u);
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(Cluster, ListAgentsOnAnyNodeNamesTheAgentsOfAllNodes) {
  auto c = mesh();
  member a1{"team.a1"}, b1{"team.b1"}, b2{"solo.b2"}, c1{"team.c1"};
  runtime rt;
  join(rt, a1, (*c)[0]);
  join(rt, b1, (*c)[1]);
  join(rt, b2, (*c)[1]);
  join(rt, c1, (*c)[2]);
  std::vector<std::string> all{"solo.b2", "team.a1", "team.b1", "team.c1"};
  for (auto* m : {&a1, &b1, &c1}) {
    ASSERT_TRUE(wait_listed(*m, all)) << m->agent.name() << ": " << listing(*m);
    EXPECT_EQ(listed(*m), all) << "sorted, each name once, nothing else";
    EXPECT_EQ(listed(*m, "team."), (std::vector<std::string>{"team.a1", "team.b1", "team.c1"}));
  }
  // An agent that leaves (Goodbye) leaves every node's listing.
  on(b2, [](lambda_agent& s) { s.stop(); });
  EXPECT_TRUE(wait_listed(a1, {"team.a1", "team.b1", "team.c1"}, {"solo.b2"})) << listing(a1);
  EXPECT_TRUE(wait_listed(c1, {"team.a1", "team.b1", "team.c1"}, {"solo.b2"})) << listing(c1);
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, PerSenderOrderHoldsAcrossNodesUnderLoad) {
  auto c = mesh();
  constexpr int from_a = 20'000;
  constexpr int from_c = 5'000;
  member fast{"fast"}, other{"other"}, sink{"sink"};
  std::mutex mtx;
  std::map<std::string, int> next; // per sender: the next number expected
  std::vector<std::string> out_of_order;
  std::atomic<int> received{0};
  sink.agent.on_msg = [&](const message& m) {
    std::lock_guard guard{mtx};
    auto n = std::stoi(m.payload);
    auto& want = next[m.sender];
    if (n != want && out_of_order.size() < 10)
      out_of_order.push_back(m.sender + ": got " + std::to_string(n) + " expected "
                             + std::to_string(want));
    want = n + 1;
    ++received;
  };
  runtime rt{runtime_options{3}};
  join(rt, fast, (*c)[0]);
  join(rt, sink, (*c)[1]);
  join(rt, other, (*c)[2]);
  ASSERT_TRUE(wait_listed(fast, {"sink"})) << listing(fast);
  ASSERT_TRUE(wait_listed(other, {"sink"})) << listing(other);
  auto t0 = clock_type::now();
  // Both senders at once, each in one go (~1 MB, under the SDK's send
  // buffer): the links and the routers see interleaved load.
  ASSERT_TRUE(fast.agent.post([&] {
    for (int i = 0; i < from_a; ++i)
      if (auto e = fast.agent.send_to("sink", std::to_string(i))) {
        ADD_FAILURE() << "send " << i << ": " << e.message();
        return;
      }
  }));
  ASSERT_TRUE(other.agent.post([&] {
    for (int i = 0; i < from_c; ++i)
      if (auto e = other.agent.send_to("sink", std::to_string(i))) {
        ADD_FAILURE() << "send " << i << ": " << e.message();
        return;
      }
  }));
  EXPECT_TRUE(eventually([&] { return received.load() >= from_a + from_c; }, 60s))
    << received.load() << " of " << from_a + from_c << " arrived";
  auto secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::lock_guard guard{mtx};
  EXPECT_TRUE(out_of_order.empty()) << testing::PrintToString(out_of_order);
  EXPECT_EQ(next["fast"], from_a);
  EXPECT_EQ(next["other"], from_c);
  EXPECT_EQ(received.load(), from_a + from_c) << "duplicates";
  EXPECT_TRUE(fast.notices().empty()) << fast.notices().front().code;
  EXPECT_TRUE(other.notices().empty()) << other.notices().front().code;
  RecordProperty("seconds", std::to_string(secs));
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, AHelloForANameHeldOnAnotherNodeIsRefusedNameTaken) {
  auto c = mesh();
  member alice{"alice"}, bob{"bob"}, impostor{"alice"};
  runtime rt;
  join(rt, alice, (*c)[0]);
  join(rt, bob, (*c)[1]);
  ASSERT_TRUE(wait_listed(bob, {"alice"})) << listing(bob);
  // On the wire: a Notice name_taken, no Welcome.
  raw_client raw{(*c)[1].port()};
  auto answer = raw.hello("alice");
  ASSERT_TRUE(answer.has_notice()) << answer.ShortDebugString();
  EXPECT_EQ(answer.notice().code(), "name_taken");
  // The SDK: refused, and it does not retry (name_taken is final).
  ASSERT_TRUE(wait_listed(bob, {"alice"}));
  rt.start(impostor.agent, local_options((*c)[2].port()));
  ASSERT_TRUE(impostor.log.wait_for("disconnect:name_taken", 10s))
    << testing::PrintToString(impostor.log.snapshot());
  EXPECT_EQ(impostor.log.count("connect"), 0u);
  // The holder keeps its name and its messages.
  on(bob, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("alice", "still-yours")); });
  ASSERT_TRUE(alice.log.wait_for("message:still-yours", 10s));
  EXPECT_EQ(alice.log.count("disconnect:replaced"), 0u);
  rt.stop_all();
  rt.wait();
}

// -- faults -------------------------------------------------------------------

TEST(Cluster, Kill9OfANodeIsNoticedItsAgentsLeaveAndTheOthersKeepRelaying) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_a{"on-a"}, on_c{"on-c"}, b1{"b1"}, b2{"b2"};
  runtime rt;
  join(rt, on_a, a);
  join(rt, on_c, cc);
  join(rt, b1, b);
  join(rt, b2, b);
  std::string token;
  auto mover = raw_join(b, "mover", &token);
  ASSERT_FALSE(token.empty());
  std::vector<std::string> all{"b1", "b2", "mover", "on-a", "on-c"};
  ASSERT_TRUE(wait_listed(on_a, all)) << listing(on_a);
  ASSERT_TRUE(wait_listed(on_c, all)) << listing(on_c);

  auto t0 = clock_type::now();
  b.kill9();
  auto detection = c->timing().timeout_ms + slack;
  ASSERT_TRUE(on_a.log.wait_for("notice:node_lost", detection))
    << testing::PrintToString(on_a.log.snapshot());
  auto noticed = std::chrono::duration<double>(clock_type::now() - t0).count();
  ASSERT_TRUE(on_c.log.wait_for("notice:node_lost", detection))
    << testing::PrintToString(on_c.log.snapshot());
  EXPECT_NE(on_a.notice_texts("node_lost").find("nodeB"), std::string::npos)
    << on_a.notice_texts("node_lost");
  EXPECT_NE(on_a.notice_texts("node_lost").find(" 3 "), std::string::npos)
    << "the Notice says how many agents left (3): " << on_a.notice_texts("node_lost");
  for (auto& n : on_a.notices()) {
    if (n.code == "node_lost") {
      EXPECT_EQ(n.severity, notice::level::info);
    }
  }
  EXPECT_EQ(on_a.log.count("notice:node_lost"), 1u);
  RecordProperty("node_lost_after_seconds", std::to_string(noticed));
  // B's agents are gone from the directory of both survivors.
  EXPECT_TRUE(wait_listed(on_a, {"on-a", "on-c"}, {"b1", "b2", "mover"}, detection))
    << listing(on_a);
  EXPECT_TRUE(wait_listed(on_c, {"on-a", "on-c"}, {"b1", "b2", "mover"}, detection))
    << listing(on_c);
  EXPECT_TRUE(c->wait_peers(a, {"nodeC"})) << c->describe();
  EXPECT_TRUE(c->wait_peers(cc, {"nodeA"})) << c->describe();
  // A and C relay on: direct both ways, a broadcast, and a name of B's is
  // unknown now.
  on(on_a, [](lambda_agent& s) {
    EXPECT_FALSE(s.send_to("on-c", "after-kill"));
    EXPECT_FALSE(s.broadcast("bcast-after-kill"));
    EXPECT_FALSE(s.send_to("b1", "to-the-dead"));
  });
  on(on_c, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("on-a", "c-after-kill")); });
  EXPECT_TRUE(on_c.log.wait_for("message:after-kill", 10s));
  EXPECT_TRUE(on_c.log.wait_for("message:bcast-after-kill", 10s));
  EXPECT_TRUE(on_a.log.wait_for("message:c-after-kill", 10s));
  EXPECT_TRUE(on_a.log.wait_for("notice:unknown_recipient", 10s))
    << testing::PrintToString(on_a.log.snapshot());
  // An agent of B resumes its name on A with its resume token.
  raw_client resumed{a.port()};
  auto w = resumed.hello("mover", {}, token);
  ASSERT_TRUE(w.has_welcome()) << w.ShortDebugString();
  EXPECT_TRUE(wait_listed(on_c, {"mover"})) << listing(on_c);
  on(on_c, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("mover", "welcome-back")); });
  auto env = resumed.read_envelope(10s);
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->payload(), "welcome-back");
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, AnSdkAgentWithSeveralServersResumesItsNameOnALiveNodeAfterKill9) {
  // docs/cluster.md, "Faults": the lost node's agents reconnect to another
  // node (the SDK takes several server addresses and rotates) and resume
  // their names with their resume tokens.
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  member on_a{"on-a"}, roamer{"roamer"};
  runtime rt;
  join(rt, on_a, a);
  auto opts = local_options(b.port());
  ASSERT_TRUE(set_server_address(opts, b.address() + "," + a.address()))
    << "the SDK takes no list of servers (branch cluster-sdk)";
  rt.start(roamer.agent, opts);
  ASSERT_TRUE(roamer.log.wait_for("connect", 10s))
    << "host=" << opts.host << " port=" << opts.port << ": "
    << testing::PrintToString(roamer.log.snapshot());
  auto on_node = [&](cluster_node& n) {
    auto j = nlohmann::json::parse(n.admin_get("/connz?name=roamer"), nullptr, false);
    return j.is_object() ? j.value("total", 0) : 0;
  };
  ASSERT_EQ(on_node(b), 1) << "the first address is nodeB's";
  ASSERT_TRUE(wait_listed(on_a, {"roamer"})) << listing(on_a);
  b.kill9();
  ASSERT_TRUE(roamer.log.wait_for("reconnect", 15s))
    << testing::PrintToString(roamer.log.snapshot());
  EXPECT_EQ(roamer.agent.name(), "roamer");
  EXPECT_EQ(on_node(a), 1);
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("roamer", "found-you")); });
  EXPECT_TRUE(roamer.log.wait_for("message:found-you", 10s))
    << testing::PrintToString(roamer.log.snapshot());
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, ASigstoppedNodeIsLostByHeartbeatsAndRejoinsOnSigcont) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_a{"on-a"}, on_b{"on-b"}, on_c{"on-c"};
  runtime rt;
  join(rt, on_a, a);
  join(rt, on_b, b);
  join(rt, on_c, cc);
  std::vector<std::string> all{"on-a", "on-b", "on-c"};
  ASSERT_TRUE(wait_listed(on_a, all)) << listing(on_a);
  ASSERT_TRUE(wait_listed(on_c, all)) << listing(on_c);

  auto t0 = clock_type::now();
  b.freeze(); // its connections stay open: only heartbeats can tell
  ASSERT_TRUE(on_a.log.wait_for("notice:node_lost", c->timing().timeout_ms + slack))
    << testing::PrintToString(on_a.log.snapshot());
  auto noticed = clock_type::now() - t0;
  EXPECT_GE(noticed, c->timing().timeout_ms / 2)
    << "lost before cluster.timeout: not by heartbeats";
  RecordProperty(
    "node_lost_after_ms",
    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(noticed).count()));
  EXPECT_NE(on_a.notice_texts("node_lost").find("nodeB"), std::string::npos);
  ASSERT_TRUE(on_c.log.wait_for("notice:node_lost", c->timing().timeout_ms + slack));
  EXPECT_TRUE(wait_listed(on_a, {"on-a", "on-c"}, {"on-b"})) << listing(on_a);
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("on-c", "while-b-sleeps")); });
  EXPECT_TRUE(on_c.log.wait_for("message:while-b-sleeps", 10s));

  b.thaw();
  std::string why;
  ASSERT_TRUE(c->wait_mesh(15s, &why)) << "nodeB did not rejoin:\n" << why;
  // B's agents are back in everyone's directory (nothing took them over).
  EXPECT_TRUE(wait_listed(on_a, all)) << listing(on_a) << "\n" << c->describe();
  EXPECT_TRUE(wait_listed(on_c, all)) << listing(on_c);
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("on-b", "after-cont")); });
  on(on_c, [](lambda_agent& s) { EXPECT_FALSE(s.broadcast("bcast-after-cont")); });
  EXPECT_TRUE(on_b.log.wait_for("message:after-cont", 10s))
    << testing::PrintToString(on_b.log.snapshot());
  EXPECT_TRUE(on_b.log.wait_for("message:bcast-after-cont", 10s));
  EXPECT_TRUE(on_a.log.wait_for("message:bcast-after-cont", 10s));
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, AnAgentTakesItsNameOverOnAnotherNodeWhileItsNodeIsSilent) {
  // docs/cluster.md, "Names": with its resume token, an agent whose node
  // died resumes on another node before the death is even detected; the
  // take-over wins when the nodes meet again.
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_a{"on-a"}, on_b{"on-b"}, on_c{"on-c"};
  runtime rt;
  join(rt, on_a, a);
  join(rt, on_b, b);
  join(rt, on_c, cc);
  std::string token;
  auto mover = raw_join(b, "mover", &token);
  std::vector<std::string> all{"mover", "on-a", "on-b", "on-c"};
  ASSERT_TRUE(wait_listed(on_a, all)) << listing(on_a);
  ASSERT_TRUE(wait_listed(on_c, all)) << listing(on_c);

  b.freeze();
  raw_client resumed{a.port()};
  auto w = resumed.hello("mover", {}, token);
  ASSERT_TRUE(w.has_welcome()) << "a take-over by resume token while nodeB is silent: "
                               << w.ShortDebugString();
  ASSERT_TRUE(on_a.log.wait_for("notice:node_lost", c->timing().timeout_ms + slack));
  EXPECT_TRUE(wait_listed(on_c, {"mover"}, {"on-b"})) << listing(on_c);

  b.thaw();
  std::string why;
  ASSERT_TRUE(c->wait_mesh(15s, &why)) << "nodeB did not rejoin:\n" << why;
  // The old session on B is closed: replaced (the take-over reached B) or
  // name_conflict (B learnt of it when the mesh healed; a take-over wins).
  std::vector<v1::Frame> before;
  ASSERT_TRUE(mover.wait_closed(10s, &before)) << "nodeB kept the old session of mover";
  std::string code;
  for (auto& f : before)
    if (f.has_goodbye())
      code = f.goodbye().code();
  EXPECT_TRUE(code == "replaced" || code == "name_conflict") << "Goodbye code: " << code;
  // "mover" stays where it resumed (nodeA); B's other agents are back.
  EXPECT_TRUE(wait_listed(on_a, all)) << listing(on_a) << "\n" << c->describe();
  EXPECT_TRUE(wait_listed(on_c, all)) << listing(on_c);
  on(on_a, [](lambda_agent& s) {
    EXPECT_FALSE(s.send_to("on-b", "after-cont"));
    EXPECT_FALSE(s.send_to("mover", "to-mover"));
  });
  on(on_c, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("mover", "c-to-mover")); });
  EXPECT_TRUE(on_b.log.wait_for("message:after-cont", 10s))
    << testing::PrintToString(on_b.log.snapshot());
  auto env = resumed.read_envelope(10s);
  ASSERT_TRUE(env.has_value()) << "the resumed session lost its name";
  EXPECT_EQ(env->payload(), "to-mover");
  env = resumed.read_envelope(10s);
  ASSERT_TRUE(env.has_value());
  EXPECT_EQ(env->payload(), "c-to-mover");
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, ANameAcceptedOnBothSidesOfAPartitionStaysWithTheOlderClaim) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_c{"on-c"};
  runtime rt;
  join(rt, on_c, cc);
  auto older = raw_join(b, "twin");
  ASSERT_TRUE(wait_listed(on_c, {"twin"})) << listing(on_c);
  b.freeze();
  ASSERT_TRUE(on_c.log.wait_for("notice:node_lost", c->timing().timeout_ms + slack));
  // nodeA lost nodeB too (and with it "twin"): the name is free there.
  ASSERT_TRUE(c->wait_peers(a, {"nodeC"}, c->timing().timeout_ms + slack)) << c->describe();
  raw_client newer{a.port()};
  auto w = newer.hello("twin");
  ASSERT_TRUE(w.has_welcome()) << w.ShortDebugString();
  b.thaw();
  std::string why;
  ASSERT_TRUE(c->wait_mesh(15s, &why)) << why;
  // Neither is a take-over: the older claim (nodeB's) wins, the newer gets
  // Goodbye{name_conflict} and is closed.
  std::vector<v1::Frame> before;
  ASSERT_TRUE(newer.wait_closed(10s, &before)) << "the newer claim was not closed";
  std::string code;
  for (auto& f : before)
    if (f.has_goodbye())
      code = f.goodbye().code();
  EXPECT_EQ(code, "name_conflict");
  on(on_c, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("twin", "which-twin")); });
  auto env = older.read_envelope(10s);
  ASSERT_TRUE(env.has_value()) << "the older claim did not keep the name";
  EXPECT_EQ(env->payload(), "which-twin");
  // nodeA, whose claim lost, knows where the name is now.
  member on_a{"on-a"};
  join(rt, on_a, a);
  EXPECT_TRUE(wait_listed(on_a, {"twin", "on-c"})) << listing(on_a) << "\n" << c->describe();
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("twin", "from-a")); });
  env = older.read_envelope(10s);
  ASSERT_TRUE(env.has_value()) << "nodeA does not reach the twin on nodeB: "
                               << testing::PrintToString(on_a.log.snapshot());
  EXPECT_EQ(env->payload(), "from-a");
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, AKilledNodeRestartedUnderItsNameRejoinsAndRelays) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_a{"on-a"}, on_c{"on-c"}, old_b{"old-b"};
  runtime rt;
  join(rt, on_a, a);
  join(rt, on_c, cc);
  join(rt, old_b, b);
  ASSERT_TRUE(wait_listed(on_a, {"old-b"})) << listing(on_a);
  b.kill9();
  ASSERT_TRUE(c->wait_peers(a, {"nodeC"}, c->timing().timeout_ms + slack)) << c->describe();
  ASSERT_TRUE(c->wait_peers(cc, {"nodeA"}, c->timing().timeout_ms + slack)) << c->describe();
  ASSERT_TRUE(wait_listed(on_a, {"on-c"}, {"old-b"})) << listing(on_a);
  c->restart(b);
  std::string why;
  ASSERT_TRUE(c->wait_mesh(15s, &why)) << "the restarted node did not rejoin:\n" << why;
  member new_b{"new-b"};
  join(rt, new_b, b);
  std::vector<std::string> all{"new-b", "on-a", "on-c"};
  ASSERT_TRUE(wait_listed(on_a, all)) << listing(on_a);
  ASSERT_TRUE(wait_listed(on_c, all)) << listing(on_c);
  ASSERT_TRUE(wait_listed(new_b, all)) << listing(new_b);
  on(new_b, [](lambda_agent& s) { EXPECT_FALSE(s.broadcast("from-new-b")); });
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("new-b", "to-new-b")); });
  EXPECT_TRUE(on_a.log.wait_for("message:from-new-b", 10s));
  EXPECT_TRUE(on_c.log.wait_for("message:from-new-b", 10s));
  EXPECT_TRUE(new_b.log.wait_for("message:to-new-b", 10s));
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, SigtermDrainsAgentsWithTheAddressesOfTheLiveNodes) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_a{"on-a"};
  runtime rt;
  join(rt, on_a, a);
  auto leaving = raw_join(b, "leaving");
  ASSERT_TRUE(leaving.ping());
  ASSERT_TRUE(wait_listed(on_a, {"leaving"})) << listing(on_a);
  b.proc().signal(SIGTERM);
  auto bye = leaving.read_kind(v1::Frame::kGoodbye, 10s);
  ASSERT_TRUE(bye.has_value()) << "no Goodbye on SIGTERM";
  EXPECT_EQ(bye->goodbye().code(), "shutdown");
  std::set<std::string> hint{bye->goodbye().reconnect_to().begin(),
                             bye->goodbye().reconnect_to().end()};
  EXPECT_EQ(hint, (std::set<std::string>{a.address(), cc.address()}))
    << bye->goodbye().ShortDebugString();
  leaving.close(); // as a client does after Goodbye: nothing holds the drain
  EXPECT_EQ(b.proc().wait(10s), 0) << b.log();
  EXPECT_TRUE(c->wait_peers(a, {"nodeC"}, c->timing().timeout_ms + slack)) << c->describe();
  // Its agents leave the directory of the others.
  EXPECT_TRUE(wait_listed(on_a, {"on-a"}, {"leaving"})) << listing(on_a);
  rt.stop_all();
  rt.wait();
}

TEST(Cluster, AnSdkAgentFollowsTheDrainHintToALiveNode) {
  // The SDK tries Goodbye.reconnect_to first (docs/cluster.md, "Drain"):
  // the agent of a draining node resumes its name on a live one.
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  member on_a{"on-a"}, drained{"drained"};
  runtime rt;
  join(rt, on_a, a);
  join(rt, drained, b);
  ASSERT_TRUE(wait_listed(on_a, {"drained"})) << listing(on_a);
  b.proc().signal(SIGTERM);
  ASSERT_TRUE(drained.log.wait_for("disconnect:shutdown", 10s))
    << testing::PrintToString(drained.log.snapshot());
  ASSERT_TRUE(drained.log.wait_for("reconnect", 15s))
    << "the agent did not reconnect to a live node: "
    << testing::PrintToString(drained.log.snapshot());
  EXPECT_EQ(drained.agent.name(), "drained");
  auto here = [&](cluster_node& n) {
    auto j = nlohmann::json::parse(n.admin_get("/connz?name=drained"), nullptr, false);
    return j.is_object() ? j.value("total", 0) : 0;
  };
  EXPECT_EQ(here(a) + here(cc), 1) << "drained is connected to nodeA or nodeC";
  ASSERT_TRUE(eventually([&] {
    auto names = listed(on_a);
    return names && has(*names, "drained");
  }));
  on(on_a, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("drained", "found-you")); });
  EXPECT_TRUE(drained.log.wait_for("message:found-you", 10s));
  EXPECT_EQ(b.proc().wait(10s), 0) << b.log();
  rt.stop_all();
  rt.wait();
}

// -- traces and ids -----------------------------------------------------------

TEST(Cluster, TracesNameTheNodesAMessageCrossedAndIdsAreUniqueAcrossNodes) {
  auto c = mesh();
  auto& a = (*c)[0];
  auto& b = (*c)[1];
  auto& cc = (*c)[2];
  // b1 takes every broadcast; b2 and c1 only route x.y.
  member from_a{"from-a"}, b1{"b1"}, b2{"b2", {"x.y"}}, c1{"c1", {"x.y"}};
  runtime rt;
  join(rt, from_a, a);
  join(rt, b1, b);
  join(rt, b2, b);
  join(rt, c1, cc);
  ASSERT_TRUE(wait_listed(from_a, {"b1", "b2", "c1"})) << listing(from_a);
  ASSERT_TRUE(wait_listed(b1, {"from-a", "c1"})) << listing(b1);
  on(from_a, [](lambda_agent& s) {
    EXPECT_FALSE(s.send_to("b1", "direct"));
    EXPECT_FALSE(s.broadcast("unrouted")); // only b1 wants it: nodeC is not sent it
    EXPECT_FALSE(s.publish("x.y", "fan-out"));
  });
  on(b1, [](lambda_agent& s) { EXPECT_FALSE(s.send_to("c1", "from-b")); });
  ASSERT_TRUE(b1.log.wait_for("message:direct", 10s));
  ASSERT_TRUE(b1.log.wait_for("message:unrouted", 10s));
  ASSERT_TRUE(b1.log.wait_for("message:fan-out", 10s));
  ASSERT_TRUE(b2.log.wait_for("message:fan-out", 10s));
  ASSERT_TRUE(c1.log.wait_for("message:fan-out", 10s));
  ASSERT_TRUE(c1.log.wait_for("message:from-b", 10s));
  EXPECT_EQ(c1.log.count("message:unrouted"), 0u);
  EXPECT_EQ(b2.log.count("message:unrouted"), 0u);
  auto direct = b1.message_with("direct").id;
  auto unrouted = b1.message_with("unrouted").id;
  auto fan_out = b2.message_with("fan-out").id;
  auto from_b = c1.message_with("from-b").id;
  // The same message has the same id on every node it reaches.
  EXPECT_EQ(c1.message_with("fan-out").id, fan_out);
  // Ids carry the origin's node number (bits 44-51) and stay below 2^53.
  for (auto id : {direct, fan_out, from_b})
    EXPECT_LT(id, uint64_t{1} << 53) << id;
  EXPECT_EQ((direct >> 44) & 0xff, (fan_out >> 44) & 0xff) << "both from nodeA";
  EXPECT_NE((direct >> 44) & 0xff, (from_b >> 44) & 0xff) << direct << " vs " << from_b;
  EXPECT_NE(direct, from_b);

  // Origin: one relay event each, naming the nodes it was sent to.
  std::vector<nlohmann::json> relay_direct, relay_unrouted, relay_fan;
  ASSERT_TRUE(eventually(
    [&] {
      auto t = a.trace();
      relay_direct = events_of(t, "relay", direct);
      relay_unrouted = events_of(t, "relay", unrouted);
      relay_fan = events_of(t, "relay", fan_out);
      return !relay_direct.empty() && !relay_unrouted.empty() && !relay_fan.empty();
    },
    10s))
    << read_file(a.trace_path());
  // docs/cluster.md, "Traces": `nodes=A>B,C` on the node a message came
  // from.
  ASSERT_EQ(relay_direct.size(), 1u);
  EXPECT_EQ(crossing(relay_direct[0]), "nodeA>nodeB") << relay_direct[0].dump();
  ASSERT_EQ(relay_unrouted.size(), 1u);
  EXPECT_EQ(crossing(relay_unrouted[0]), "nodeA>nodeB")
    << "interest: no agent on nodeC wants an unrouted broadcast: " << relay_unrouted[0].dump();
  ASSERT_EQ(relay_fan.size(), 1u);
  EXPECT_EQ(crossing(relay_fan[0]), "nodeA>nodeB,nodeC")
    << "each node once, however many receivers it has: " << relay_fan[0].dump();
  // Receiving nodes: a relay event `nodes=A>B`, once per message (the
  // broadcast crossed to nodeB once for its two receivers).
  std::vector<nlohmann::json> on_b_direct, on_b_fan, on_c_fan;
  ASSERT_TRUE(eventually(
    [&] {
      auto tb = b.trace();
      auto tc = cc.trace();
      on_b_direct = events_of(tb, "relay", direct);
      on_b_fan = events_of(tb, "relay", fan_out);
      on_c_fan = events_of(tc, "relay", fan_out);
      return !on_b_direct.empty() && !on_b_fan.empty() && !on_c_fan.empty();
    },
    10s))
    << "nodeB:\n"
    << read_file(b.trace_path()) << "\nnodeC:\n"
    << read_file(cc.trace_path());
  ASSERT_EQ(on_b_direct.size(), 1u);
  EXPECT_EQ(crossing(on_b_direct[0]), "nodeA>nodeB") << on_b_direct[0].dump();
  ASSERT_EQ(on_b_fan.size(), 1u);
  EXPECT_EQ(crossing(on_b_fan[0]), "nodeA>nodeB")
    << "a relayed copy is not sent on again: " << on_b_fan[0].dump();
  ASSERT_EQ(on_c_fan.size(), 1u);
  EXPECT_EQ(crossing(on_c_fan[0]), "nodeA>nodeC") << on_c_fan[0].dump();
  // nodeC's trace has the later fan-out, so the unrouted broadcast (sent
  // before it on the same link) would be there too had it crossed.
  EXPECT_TRUE(events_of(cc.trace(), "relay", unrouted).empty()) << read_file(cc.trace_path());
  // Every node writes its own trace, with its own boot id (`boot` and
  // `message_id` join them).
  auto boot_of = [](const std::vector<nlohmann::json>& t) {
    return t.empty() ? std::string{} : t.front().value("boot", std::string{});
  };
  EXPECT_FALSE(boot_of(a.trace()).empty());
  EXPECT_NE(boot_of(a.trace()), boot_of(b.trace()));
  rt.stop_all();
  rt.wait();
}
