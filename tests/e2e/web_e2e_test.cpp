// End to end: the web view (GET /trace, /tracez, /tracez/conversation) of a
// real convoke-server process while agents talk, rendered by a real browser
// (Debian's chromium, headless; scripts/lib.sh TEST_PACKAGES installs it).
// The DOM the page built is checked for the agents and messages the test
// sent: names and message ids from this run, not fixed strings.

#include <gtest/gtest.h>

#include <unistd.h>

#include <regex>
#include <set>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "server_process.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::string admin_get(const server_process& srv, const std::string& path, int* status = nullptr,
                      const std::string& token = {}, std::string* content_type = nullptr) {
  httplib::Client c{"127.0.0.1", srv.admin_port};
  c.set_read_timeout(5);
  if (!token.empty())
    c.set_basic_auth("ops", token);
  auto r = c.Get(path);
  if (!r)
    return "no answer: " + httplib::to_string(r.error());
  if (status)
    *status = r->status;
  if (content_type)
    *content_type = r->get_header_value("Content-Type");
  return r->body;
}

std::string chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (::access(p, X_OK) == 0)
      return p;
  return {};
}

/// The DOM of `url` once the page had `budget` of virtual time (its timers
/// run, the browser waits for its requests).
std::string dump_dom(const std::string& url, int budget_ms = 8000) {
  temp_dir profile;
  process browser{{chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-extensions", "--user-data-dir=" + profile.path,
                   "--virtual-time-budget=" + std::to_string(budget_ms), "--dump-dom", url}};
  auto rc = browser.wait(90s);
  EXPECT_TRUE(rc) << "chromium did not finish: " << browser.err();
  EXPECT_EQ(rc.value_or(-1), 0) << browser.err();
  return browser.out();
}

struct drawn_msg {
  std::string cls, id, event, from, to, trace;
};

/// The `<g class="msg ...">` (or conv-msg) elements of a dumped DOM, by id.
std::map<std::string, drawn_msg> messages_in(const std::string& dom, const std::string& cls) {
  std::map<std::string, drawn_msg> out;
  std::regex re{
    "<g class=\"(" + cls
    + "(?: [a-z-]+)*)\" data-id=\"([0-9]+)\" data-seq=\"[0-9]+\" data-event=\"([a-z]+)\""
      " data-from=\"([^\"]*)\" data-to=\"([^\"]*)\" data-trace=\"([0-9a-f]*)\""};
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), re); it != std::sregex_iterator();
       ++it) {
    auto& m = *it;
    out[m[2]] = {m[1], m[2], m[3], m[4], m[5], m[6]};
  }
  return out;
}

std::set<std::string> agents_in(const std::string& dom, const std::string& cls) {
  std::set<std::string> out;
  std::regex re{"<g class=\"" + cls + "\" data-name=\"([^\"]*)\""};
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), re); it != std::sregex_iterator();
       ++it)
    out.insert((*it)[1]);
  return out;
}

/// Sends a direct message with a trace id; the recipient reads it; its id.
std::string send_traced(raw_client& from, raw_client& to, const std::string& to_name,
                        const std::string& route, const std::string& trace_id) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient(to_name);
  e->set_route(route);
  e->set_payload("hello " + to_name);
  e->set_trace_id(trace_id);
  EXPECT_TRUE(from.send(f));
  auto d = to.read_delivery();
  EXPECT_TRUE(d) << "no delivery for " << to_name;
  return d ? std::to_string(d->message_id()) : "none";
}

std::set<std::string> ids_of(const std::map<std::string, drawn_msg>& m) {
  std::set<std::string> out;
  for (auto& [id, _] : m)
    out.insert(id);
  return out;
}

} // namespace

TEST(WebView, ChromiumShowsTheAgentsMessagesAndConversationsOfAServerUnderTraffic) {
  if (chromium().empty())
    GTEST_SKIP() << "chromium is not installed (apt-get install chromium; it is in "
                    "scripts/lib.sh TEST_PACKAGES): the web view was not rendered";
  server_process srv;
  ASSERT_NE(srv.admin_port, 0);
  int status = 0;
  // The first request subscribes the server's ring of recent events.
  admin_get(srv, "/tracez", &status);
  ASSERT_EQ(status, 200);

  auto suffix = crypto::random_hex(3);
  std::string alice = "alice-" + suffix, bob = "bob-" + suffix, carol = "carol-" + suffix;
  raw_client a{srv.port}, b{srv.port}, c{srv.port};
  ASSERT_TRUE(a.hello(alice).has_welcome());
  ASSERT_TRUE(b.hello(bob).has_welcome());
  ASSERT_TRUE(c.hello(carol, {"news"}).has_welcome());
  std::string t1(16, '\0'), t2(16, '\0');
  crypto::random_bytes(t1.data(), t1.size());
  crypto::random_bytes(t2.data(), t2.size());
  auto ask = send_traced(a, b, bob, "orders.new", t1);
  auto answer = send_traced(b, a, alice, "orders.done", t1);
  auto other = send_traced(b, c, carol, "news", t2);
  ASSERT_TRUE(a.send_envelope({}, "to everyone", "news"));
  auto cast = b.read_delivery();
  ASSERT_TRUE(cast);
  ASSERT_TRUE(c.read_delivery());
  auto broadcast = std::to_string(cast->message_id());

  // The server's ring has them all before the browser looks.
  ASSERT_TRUE(eventually([&] {
    auto body = json::parse(admin_get(srv, "/tracez?agent=" + alice + "," + bob + "," + carol));
    std::set<std::string> seen;
    for (auto& ev : body["events"])
      seen.insert(std::to_string(ev.value("message_id", 0ull)));
    return seen.count(ask) && seen.count(answer) && seen.count(other) && seen.count(broadcast);
  }));

  auto url = "http://127.0.0.1:" + std::to_string(srv.admin_port) + "/trace";
  auto dom = dump_dom(url);
  EXPECT_NE(dom.find("data-state=\"live\""), std::string::npos)
    << "the page did not read /tracez:\n"
    << dom.substr(0, 4000);
  auto agents = agents_in(dom, "agent");
  for (auto& n : {alice, bob, carol})
    EXPECT_TRUE(agents.count(n)) << n << " is not drawn as an agent:\n" << dom.substr(0, 4000);
  auto msgs = messages_in(dom, "msg");
  ASSERT_TRUE(msgs.count(ask) && msgs.count(answer) && msgs.count(other) && msgs.count(broadcast))
    << dom.substr(0, 6000);
  EXPECT_EQ(msgs[ask].from, alice);
  EXPECT_EQ(msgs[ask].to, bob);
  EXPECT_EQ(msgs[ask].trace, to_hex(t1));
  EXPECT_NE(msgs[ask].cls.find("traced"), std::string::npos) << "a traced message is clickable";
  EXPECT_EQ(msgs[answer].from, bob);
  EXPECT_EQ(msgs[answer].to, alice);
  EXPECT_EQ(msgs[other].to, carol);
  EXPECT_EQ(msgs[other].trace, to_hex(t2));
  EXPECT_EQ(msgs[broadcast].from, alice);
  EXPECT_EQ(msgs[broadcast].event, "relay");
  EXPECT_NE(msgs[broadcast].cls.find("broadcast"), std::string::npos);
  for (auto& n : {bob, carol})
    EXPECT_NE(msgs[broadcast].to.find(n), std::string::npos) << msgs[broadcast].to;

  // A conversation: only the messages of its trace, between its agents.
  auto conv = dump_dom(url + "#conversation=" + to_hex(t1));
  EXPECT_NE(conv.find("data-state=\"loaded\""), std::string::npos) << conv.substr(0, 4000);
  EXPECT_EQ(ids_of(messages_in(conv, "conv-msg")), (std::set<std::string>{ask, answer}));
  EXPECT_EQ(agents_in(conv, "conv-agent"), (std::set<std::string>{alice, bob}));
  // The live view marks the conversation's messages as selected.
  EXPECT_NE(messages_in(conv, "msg")[ask].cls.find("selected"), std::string::npos);

  // A filter in the address: only carol's messages (direct and broadcast).
  auto filtered = dump_dom(url + "?agent=" + carol);
  EXPECT_EQ(ids_of(messages_in(filtered, "msg")), (std::set<std::string>{other, broadcast}));
}

TEST(WebView, ThePageIsSelfContainedAndTheEndpointsRefuseBadParameters) {
  server_process srv;
  int status = 0;
  std::string type;
  auto page = admin_get(srv, "/trace", &status, {}, &type);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(type, "text/html; charset=utf-8");
  EXPECT_NE(page.find("<svg id=\"flow\""), std::string::npos);
  // Nothing is loaded from elsewhere: no src= or href= at all, no @import.
  for (auto* absent : {" src=", " href=", "@import", "https://", "url(http"})
    EXPECT_EQ(page.find(absent), std::string::npos) << absent;

  auto error = [&](const std::string& path) {
    auto body = admin_get(srv, path, &status);
    EXPECT_EQ(status, 400) << path << ": " << body;
    return json::parse(body).value("error", std::string{});
  };
  EXPECT_EQ(error("/tracez?limit=5000"), "limit: 5000 is above 1000");
  EXPECT_EQ(error("/tracez?after=soon"), "after: 'soon' is not a non-negative integer");
  EXPECT_EQ(error("/tracez?trace=xyz"),
            "trace: 'xyz' is not a trace id (2 to 32 hex digits, an even number)");
  EXPECT_EQ(error("/tracez?bogus=1"),
            "unknown parameter 'bogus' (known: after, agent, route, trace, limit)");
  EXPECT_EQ(error("/tracez/conversation"), "trace: required (the conversation's trace id, hex)");
  auto unknown = json::parse(admin_get(srv, "/tracez/conversation?trace=00ff", &status));
  EXPECT_EQ(status, 200);
  EXPECT_EQ(unknown["trace"], "00ff");
  EXPECT_TRUE(unknown["events"].empty());
}

TEST(WebView, TheViewNeedsTheAdminLoginLikeTheOtherEndpoints) {
  temp_dir dir;
  auto token = crypto::random_hex(16);
  { std::ofstream{dir.file("token")} << token << "\n"; }
  server_process srv{{"--auth.token-file", dir.file("token"), "--auth.failed-login-delay", "0s"}};
  for (auto* path : {"/trace", "/tracez", "/tracez/conversation?trace=00ff"}) {
    int status = 0;
    admin_get(srv, path, &status);
    EXPECT_EQ(status, 401) << path;
    admin_get(srv, path, &status, "wrong-" + token);
    EXPECT_EQ(status, 401) << path;
    admin_get(srv, path, &status, token);
    EXPECT_EQ(status, 200) << path;
  }
  if (chromium().empty())
    GTEST_SKIP() << "chromium is not installed: the page was not loaded with a login";
  // A browser that logged in (here: user:password@ in the address) reads
  // /tracez with the same login.
  auto dom
    = dump_dom("http://ops:" + token + "@127.0.0.1:" + std::to_string(srv.admin_port) + "/trace");
  EXPECT_NE(dom.find("data-state=\"live\""), std::string::npos) << dom.substr(0, 3000);
}

TEST(WebView, TracezWorksWithoutATraceFileAndReadsOnFromNext) {
  server_process srv{{"--trace.enabled", "false"}};
  int status = 0;
  auto first = json::parse(admin_get(srv, "/tracez", &status));
  ASSERT_EQ(status, 200);
  auto suffix = crypto::random_hex(3);
  raw_client a{srv.port}, b{srv.port};
  ASSERT_TRUE(a.hello("sender-" + suffix).has_welcome());
  ASSERT_TRUE(b.hello("receiver-" + suffix).has_welcome());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(
      send_traced(a, b, "receiver-" + suffix, "r" + std::to_string(i), crypto::random_hex(8)));
  // Polling as the page does: each answer's next is the following after.
  uint64_t after = first["next"];
  std::vector<std::string> seen;
  std::string boot;
  ASSERT_TRUE(eventually([&] {
    auto body = json::parse(
      admin_get(srv, "/tracez?after=" + std::to_string(after) + "&agent=sender-" + suffix));
    for (auto& ev : body["events"]) {
      EXPECT_GT(ev["seq"].get<uint64_t>(), after);
      if (ev["event"] == "relay")
        seen.push_back(std::to_string(ev["message_id"].get<uint64_t>()));
    }
    after = body["next"];
    boot = body["boot"];
    return seen.size() >= ids.size();
  }))
    << seen.size();
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(boot.size(), 16u);
  auto again = json::parse(
    admin_get(srv, "/tracez?after=" + std::to_string(after) + "&agent=sender-" + suffix));
  EXPECT_TRUE(again["events"].empty()) << again.dump();
  EXPECT_TRUE(read_file(srv.dir.file("trace.jsonl")).empty()) << "no trace file was written";
}

TEST(WebView, WhenTheTapHasNoRoomTracezSays503AndTriesAgainLater) {
  server_process srv{{"--trace.max-observers", "1"}};
  raw_client observer{srv.port};
  ASSERT_TRUE(observer.hello("observer-" + crypto::random_hex(3)).has_welcome());
  v1::Frame f;
  f.mutable_observe()->set_request_id(1);
  ASSERT_TRUE(observer.send(f));
  // The agent has the only place once it sees events (another agent joins).
  raw_client poke{srv.port};
  ASSERT_TRUE(poke.hello("poke-" + crypto::random_hex(3)).has_welcome());
  ASSERT_TRUE(observer.read_kind(v1::Frame::kTraceEvents, 5s)) << "the agent observes nothing";
  int status = 0;
  auto body = admin_get(srv, "/tracez", &status);
  EXPECT_EQ(status, 503) << body;
  EXPECT_EQ(json::parse(body)["error"],
            "cannot observe the trace now: too many observers (1; trace.max-observers)");
  // The agent goes: the next request subscribes.
  observer = raw_client{};
  ASSERT_TRUE(eventually([&] {
    body = admin_get(srv, "/tracez", &status);
    return status == 200;
  }))
    << status << " " << body;
}
