// Message traces of a real server over loopback sockets: who joined, the
// audience of a broadcast (every receiver, not the first 8), W3C trace
// context honoured, writes to each receiver's socket (trace.written), the
// undeliverable and who left; every event numbered and stamped with the
// server's boot id.

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "convoke/proto/codec.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using nlohmann::json;

namespace {

raw_client join(uint16_t port, const std::string& name) {
  raw_client c{port};
  auto w = c.hello(name);
  EXPECT_TRUE(w.has_welcome()) << name << ": " << w.ShortDebugString();
  return c;
}

std::vector<json> read_trace(const std::string& path) {
  std::vector<json> out;
  std::ifstream in{path};
  for (std::string line; std::getline(in, line);)
    out.push_back(json::parse(line));
  return out;
}

constexpr const char* traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

} // namespace

TEST(ServerTrace, AConversationIsTracedFromJoinToLeave) {
  temp_dir dir;
  auto path = dir.file("trace.jsonl");
  uint64_t broadcast_id = 0;
  uint64_t direct_id = 0;
  {
    test_server srv{[&](auto& cfg) {
      cfg.trace_enabled = true;
      cfg.trace_file = path;
      cfg.trace_format = logging::format::json;
      cfg.trace_written = server::trace_written_policy::traced;
    }};
    auto alice = join(srv.port(), "alice");
    auto bob = join(srv.port(), "bob");
    auto carol = join(srv.port(), "carol");
    // An OpenTelemetry caller: a traceparent header and no trace_id field.
    v1::Frame b;
    b.mutable_envelope()->set_payload("hello all");
    (*b.mutable_envelope()->mutable_headers())["traceparent"] = traceparent;
    ASSERT_TRUE(alice.send(b));
    for (auto* r : {&bob, &carol}) {
      auto d = r->read_delivery();
      ASSERT_TRUE(d.has_value());
      EXPECT_EQ(d->envelope().headers().at("traceparent"), traceparent) << "passed through";
      broadcast_id = d->message_id();
    }
    v1::Frame q;
    q.mutable_envelope()->set_recipient("bob");
    q.mutable_envelope()->set_request_id(5);
    q.mutable_envelope()->set_trace_id(std::string(16, '\x11'));
    ASSERT_TRUE(alice.send(q));
    auto d = bob.read_delivery();
    ASSERT_TRUE(d.has_value());
    direct_id = d->message_id();
    v1::Frame lost;
    lost.mutable_envelope()->set_recipient("nobody");
    ASSERT_TRUE(alice.send(lost));
    ASSERT_TRUE(alice.read_kind(v1::Frame::kNotice).has_value());
    srv.stop();
  }
  auto events = read_trace(path);
  ASSERT_FALSE(events.empty());
  std::string boot = events[0]["boot"];
  EXPECT_EQ(boot.size(), 16u);
  uint64_t seq = 0;
  std::set<std::string> joined;
  std::set<std::string> left;
  std::map<uint64_t, std::set<std::string>> audiences;
  std::set<std::string> written_to;
  bool broadcast_seen = false;
  bool direct_seen = false;
  bool undeliverable_seen = false;
  for (auto& e : events) {
    EXPECT_EQ(e["seq"].get<uint64_t>(), ++seq) << e.dump();
    EXPECT_EQ(e["boot"], boot);
    auto kind = e["event"].get<std::string>();
    if (kind == "joined")
      joined.insert(e["agent"].get<std::string>());
    else if (kind == "left")
      left.insert(e["agent"].get<std::string>());
    else if (kind == "audience")
      audiences[e["audience"]] = e["recipients"].get<std::set<std::string>>();
    else if (kind == "written" && e["message_id"] == broadcast_id) {
      written_to.insert(e["to"].get<std::string>());
      EXPECT_EQ(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    } else if (kind == "relay" && e["message_id"] == broadcast_id) {
      broadcast_seen = true;
      EXPECT_EQ(e["to"], "*");
      EXPECT_EQ(e["fanout"], 2);
      ASSERT_TRUE(audiences.count(e["audience"])) << "the audience is defined before its use";
      EXPECT_EQ(audiences[e["audience"]], (std::set<std::string>{"bob", "carol"}));
      EXPECT_EQ(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736") << "from traceparent";
      EXPECT_EQ(e["span_id"], "00f067aa0ba902b7");
      EXPECT_EQ(e["bytes"], 9);
    } else if (kind == "relay" && e["message_id"] == direct_id) {
      direct_seen = true;
      EXPECT_EQ(e["from"], "alice");
      EXPECT_EQ(e["to"], "bob");
      EXPECT_EQ(e["request_id"], 5);
      EXPECT_EQ(e["trace_id"], std::string(32, '1'));
      EXPECT_FALSE(e.contains("span_id"));
    } else if (kind == "undeliverable") {
      undeliverable_seen = true;
      EXPECT_EQ(e["to"], "nobody");
      EXPECT_EQ(e["reason"], "unknown_recipient");
    }
  }
  EXPECT_EQ(joined, (std::set<std::string>{"alice", "bob", "carol"}));
  EXPECT_EQ(left, joined) << "every agent's leaving is traced";
  EXPECT_TRUE(broadcast_seen);
  EXPECT_TRUE(direct_seen);
  EXPECT_TRUE(undeliverable_seen);
  EXPECT_EQ(written_to, (std::set<std::string>{"bob", "carol"}))
    << "trace.written=traced: one written event per receiver of a traced message";
}

TEST(ServerTrace, AnInvalidTraceparentIsRelayedButNotTakenAsTheTrace) {
  temp_dir dir;
  auto path = dir.file("trace.jsonl");
  // Upper-case hex, version ff, an all-zero trace id, a short one: the
  // specification says to ignore each.
  std::vector<std::string> bad = {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
                                  "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                  "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                                  "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01"};
  {
    test_server srv{[&](auto& cfg) {
      cfg.trace_enabled = true;
      cfg.trace_file = path;
      cfg.trace_format = logging::format::json;
    }};
    auto alice = join(srv.port(), "alice");
    auto bob = join(srv.port(), "bob");
    for (auto& v : bad) {
      v1::Frame f;
      f.mutable_envelope()->set_recipient("bob");
      (*f.mutable_envelope()->mutable_headers())["traceparent"] = v;
      ASSERT_TRUE(alice.send(f));
      auto d = bob.read_delivery();
      ASSERT_TRUE(d.has_value());
      EXPECT_EQ(d->envelope().headers().at("traceparent"), v);
    }
    srv.stop();
  }
  size_t relays = 0;
  for (auto& e : read_trace(path))
    if (e["event"] == "relay") {
      ++relays;
      EXPECT_FALSE(e.contains("trace_id")) << e.dump();
    }
  EXPECT_EQ(relays, bad.size());
}

TEST(ServerTrace, AFanOutToHundredsListsEveryReceiverOnce) {
  // Before, a record named at most 8 receivers. Now the audience event
  // names every one, once, and each relay refers to it by number.
  temp_dir dir;
  auto path = dir.file("trace.jsonl");
  constexpr int receivers = 150;
  {
    test_server srv{[&](auto& cfg) {
      cfg.trace_enabled = true;
      cfg.trace_file = path;
      cfg.trace_format = logging::format::json;
    }};
    std::vector<raw_client> rs;
    for (int i = 0; i < receivers; ++i)
      rs.push_back(join(srv.port(), "r" + std::to_string(i)));
    auto sender = join(srv.port(), "sender");
    for (int i = 0; i < 20; ++i) {
      v1::Frame f;
      f.mutable_envelope()->set_payload("x");
      ASSERT_TRUE(sender.send(f));
    }
    for (int i = 0; i < 20; ++i)
      ASSERT_TRUE(rs.back().read_delivery().has_value());
    srv.stop();
  }
  size_t definitions = 0;
  size_t relays = 0;
  std::set<std::string> names;
  for (auto& e : read_trace(path)) {
    if (e["event"] == "audience") {
      ++definitions;
      names = e["recipients"].get<std::set<std::string>>();
      EXPECT_EQ(e["count"], receivers);
    }
    if (e["event"] == "relay") {
      ++relays;
      EXPECT_EQ(e["fanout"], receivers);
    }
  }
  EXPECT_EQ(relays, 20u);
  EXPECT_EQ(definitions, 1u) << "one definition for one audience";
  EXPECT_EQ(names.size(), static_cast<size_t>(receivers));
  EXPECT_TRUE(names.count("r0") && names.count("r149"));
}
