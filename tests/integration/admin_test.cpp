// The admin HTTP listener of an in-process server, over real HTTP: what
// /connz and /routez show of live agents, /readyz during a drain, bad and
// slow requests, and Basic authentication with identities or a token.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "admin_support.hpp"
#include "credentials.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "test_certs.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

httplib::Client admin_client(test_server& srv) {
  httplib::Client c{"127.0.0.1", srv.get().admin_port()};
  c.set_connection_timeout(5);
  c.set_read_timeout(5);
  return c;
}

json get_json(test_server& srv, const std::string& path, int expect = 200) {
  auto c = admin_client(srv);
  auto r = c.Get(path);
  if (!r) {
    ADD_FAILURE() << "GET " << path << ": " << httplib::to_string(r.error());
    return {};
  }
  EXPECT_EQ(r->status, expect) << path << ": " << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  return json::parse(r->body);
}

json row_of(const json& connz, const std::string& name) {
  for (auto& c : connz["connections"])
    if (c["name"] == name)
      return c;
  return {};
}

} // namespace

TEST(Admin, ConnzAndRoutezShowLiveAgentsTheirTrafficAndRoutes) {
  test_server srv;
  raw_client alice{srv.port()};
  ASSERT_TRUE(alice.hello("alice", {"news"}).has_welcome());
  raw_client bob{srv.port()};
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(bob.send_envelope({}, "hello " + std::to_string(i), "news"));
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(alice.read_delivery()) << i;
  json connz;
  ASSERT_TRUE(eventually([&] {
    connz = get_json(srv, "/connz");
    return row_of(connz, "alice").value("out_msgs", 0) == 3
           && row_of(connz, "bob").value("in_msgs", 0) == 3;
  }))
    << connz.dump(2);
  EXPECT_EQ(connz["total"], 2);
  auto a = row_of(connz, "alice");
  auto b = row_of(connz, "bob");
  EXPECT_EQ(a["routes"], json::array({"news"}));
  EXPECT_TRUE(b["routes"].empty());
  EXPECT_GT(b["in_bytes"].get<uint64_t>(), 3 * 7u);
  EXPECT_EQ(a["out_bytes"].get<uint64_t>() > b["in_bytes"].get<uint64_t>(), true)
    << "deliveries carry the stamp on top of the envelope";
  EXPECT_EQ(a["in_msgs"], 0);
  EXPECT_EQ(a["dropped"], 0);
  EXPECT_EQ(a["sdk"], "raw-test");
  EXPECT_NE(a["address"].get<std::string>().find("127.0.0.1:"), std::string::npos);
  // Sorting, paging and the name filter over HTTP.
  auto top = get_json(srv, "/connz?sort=in_msgs&order=desc&limit=1");
  ASSERT_EQ(top["connections"].size(), 1u);
  EXPECT_EQ(top["connections"][0]["name"], "bob");
  EXPECT_EQ(top["total"], 2);
  auto filtered = get_json(srv, "/connz?name=lic");
  ASSERT_EQ(filtered["connections"].size(), 1u);
  EXPECT_EQ(filtered["connections"][0]["name"], "alice");
  // A subscription change shows up in /connz and /routez.
  v1::Frame sub;
  sub.mutable_subscribe()->add_routes("weather");
  ASSERT_TRUE(bob.send(sub));
  json routez;
  ASSERT_TRUE(eventually([&] {
    routez = get_json(srv, "/routez");
    return routez["total"] == 2;
  }))
    << routez.dump();
  EXPECT_EQ(routez["every_broadcast"], 0);
  EXPECT_EQ(routez["routes"][0], json({{"route", "news"}, {"subscribers", 1}}));
  EXPECT_EQ(routez["routes"][1], json({{"route", "weather"}, {"subscribers", 1}}));
  // An agent that leaves is gone from /connz.
  bob.close();
  ASSERT_TRUE(eventually([&] { return get_json(srv, "/connz")["total"] == 1; }));
  // /varz has the totals.
  auto varz = get_json(srv, "/varz");
  EXPECT_EQ(varz["totals"]["messages_in"], 3);
  EXPECT_EQ(varz["totals"]["deliveries"], 3);
  EXPECT_EQ(varz["port"], srv.port());
  EXPECT_EQ(varz["admin_port"], srv.get().admin_port());
  EXPECT_EQ(varz["draining"], false);
}

TEST(Admin, ReadyzTurnsUnavailableWhileTheServerDrains) {
  test_server srv;
  raw_client alice{srv.port()};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  EXPECT_EQ(get_json(srv, "/healthz")["status"], "ok");
  EXPECT_EQ(get_json(srv, "/readyz")["status"], "ready");
  srv.get().shutdown(); // alice does not answer the Goodbye: the drain lasts
  EXPECT_EQ(get_json(srv, "/readyz", 503)["status"], "draining");
  EXPECT_EQ(get_json(srv, "/healthz")["status"], "ok"); // alive all the same
  EXPECT_EQ(get_json(srv, "/varz")["draining"], true);
  srv.get().wait();
}

TEST(Admin, BadRequestsGetHttpErrorsWithAReason) {
  test_server srv;
  auto c = admin_client(srv);
  auto r = c.Get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(r->body.find("no such endpoint"), std::string::npos);
  r = c.Get("/connz?sort=size");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("sort: unknown key 'size'"), std::string::npos) << r->body;
  r = c.Get("/connz?limit=99999999999999999999999");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = c.Get("/routez?x=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  r = c.Delete("/varz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "GET, HEAD");
  // A header larger than the server takes.
  httplib::Headers big{{"X-Big", std::string(64 * 1024, 'a')}};
  r = c.Get("/healthz", big);
  if (r) { // or the server closed the connection without an answer
    EXPECT_GE(r->status, 400);
  }
  // Garbage that is not HTTP.
  int fd = connect_to(srv.get().admin_port());
  ASSERT_GE(fd, 0);
  std::string junk = "\x16\x03\x01 not http at all\r\n\r\n";
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
  char buf[256];
  auto n = ::read(fd, buf, sizeof buf); // an answer (400) or a close, never a hang
  if (n > 0) {
    EXPECT_EQ(std::string(buf, static_cast<size_t>(n)).rfind("HTTP/1.1 400", 0), 0u);
  }
  ::close(fd);
  EXPECT_EQ(get_json(srv, "/healthz")["status"], "ok");
}

TEST(Admin, SlowAdminClientsDoNotDisturbRelaying) {
  test_server srv;
  // Clients that start a request and never finish it hold admin workers.
  std::vector<int> slow;
  for (int i = 0; i < 32; ++i) {
    int fd = connect_to(srv.get().admin_port());
    ASSERT_GE(fd, 0);
    std::string partial = "GET /varz HTTP/1.1\r\nHost: x\r\n";
    ASSERT_GT(::write(fd, partial.data(), partial.size()), 0);
    slow.push_back(fd);
  }
  raw_client alice{srv.port()};
  ASSERT_TRUE(alice.hello("alice").has_welcome());
  raw_client bob{srv.port()};
  ASSERT_TRUE(bob.hello("bob").has_welcome());
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(bob.send_envelope("alice", "m" + std::to_string(i)));
  for (int i = 0; i < 100; ++i) {
    auto e = alice.read_envelope();
    ASSERT_TRUE(e) << i;
    EXPECT_EQ(e->payload(), "m" + std::to_string(i));
  }
  for (int fd : slow)
    ::close(fd);
  EXPECT_EQ(get_json(srv, "/healthz")["status"], "ok");
}

TEST(Admin, WithCredentialsOnlyAnAdminIdentityMayReadAndProbesStayOpen) {
  admin_credentials creds;
  test_server srv{[&](auto& cfg) {
    cfg.credentials = creds.path;
    cfg.failed_login_limit = 3;
  }};
  auto c = admin_client(srv);
  auto r = c.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  for (std::string path : {"/varz", "/connz", "/routez", "/metrics"}) {
    auto anon = c.Get(path);
    ASSERT_TRUE(anon);
    EXPECT_EQ(anon->status, 401) << path;
    EXPECT_EQ(anon->get_header_value("WWW-Authenticate"),
              "Basic realm=\"convoke\", charset=\"UTF-8\"");
  }
  auto as = [&](const std::string& user, const std::string& token) {
    httplib::Client k{"127.0.0.1", srv.get().admin_port()};
    k.set_basic_auth(user, token);
    auto res = k.Get("/varz");
    return res ? res->status : -1;
  };
  EXPECT_EQ(as("ops", creds.ops_token), 200);
  EXPECT_EQ(as("alice", creds.alice_token), 403); // a valid identity without the admin right
  EXPECT_EQ(as("ops", creds.alice_token), 401);
  EXPECT_EQ(as("nobody", creds.ops_token), 401);
  // Two wrong tokens above; requests without credentials do not count. The
  // third failure reaches the limit of 3: then even the right token waits.
  EXPECT_EQ(as("ops", "x"), 401);
  auto throttled = [&] {
    httplib::Client k{"127.0.0.1", srv.get().admin_port()};
    k.set_basic_auth("ops", creds.ops_token);
    return k.Get("/varz");
  }();
  ASSERT_TRUE(throttled);
  EXPECT_EQ(throttled->status, 429);
  EXPECT_FALSE(throttled->get_header_value("Retry-After").empty());
}

TEST(Admin, WithASharedTokenTheTokenIsThePassword) {
  test_server srv{[&](auto& cfg) { cfg.token = "a-shared-token-of-enough-length"; }};
  auto as = [&](const std::string& token) {
    httplib::Client k{"127.0.0.1", srv.get().admin_port()};
    k.set_basic_auth("anyone", token);
    auto res = k.Get("/connz");
    return res ? res->status : -1;
  };
  EXPECT_EQ(as("a-shared-token-of-enough-length"), 200);
  EXPECT_EQ(as("a-shared-token-of-enough-lengtX"), 401);
}

TEST(Admin, ATakenAdminPortFailsTheStartWithTheReason) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  auto cfg = test_config();
  cfg.admin_port = ntohs(a.sin_port);
  server::server srv{cfg};
  auto ok = srv.start();
  ::close(fd);
  ASSERT_FALSE(ok);
  EXPECT_EQ(ok.error().code, make_error_code(server::errc::bind_failed));
  EXPECT_NE(ok.error().text.find("admin endpoints"), std::string::npos) << ok.error().text;
  EXPECT_NE(ok.error().text.find("in use"), std::string::npos) << ok.error().text;
}

TEST(Admin, CanBeTurnedOff) {
  test_server srv{[&](auto& cfg) { cfg.admin_enabled = false; }};
  EXPECT_EQ(srv.get().admin_port(), 0);
}

TEST(Admin, WithAdminTlsTheEndpointsAreHttpsOnly) {
  test_certs certs;
  test_server srv{[&](auto& cfg) {
    cfg.tls_cert = certs.server.cert;
    cfg.tls_key = certs.server.key;
    cfg.admin_tls = true;
  }};
  httplib::SSLClient s{"127.0.0.1", srv.get().admin_port()};
  s.set_ca_cert_path(certs.ca.c_str());
  s.enable_server_certificate_verification(true);
  auto r = s.Get("/healthz");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  // A client that does not trust the server's CA is refused by TLS.
  httplib::SSLClient untrusting{"127.0.0.1", srv.get().admin_port()};
  untrusting.set_ca_cert_path(certs.other_ca.c_str());
  untrusting.enable_server_certificate_verification(true);
  EXPECT_FALSE(untrusting.Get("/healthz"));
  // Plain HTTP gets no answer.
  auto c = admin_client(srv);
  auto plain = c.Get("/healthz");
  EXPECT_TRUE(!plain || plain->status != 200);
}

TEST(Admin, ARequestThatDoesNotArriveInTimeIsAnswered408AndClosed) {
  test_server srv{[&](auto& cfg) { cfg.admin_request_timeout = 300ms; }};
  int fd = connect_to(srv.get().admin_port());
  ASSERT_GE(fd, 0);
  std::string partial = "GET /varz HTTP/1.1\r\nHost: x\r\n"; // never finished
  ASSERT_GT(::write(fd, partial.data(), partial.size()), 0);
  auto start = std::chrono::steady_clock::now();
  std::string got;
  char buf[512];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) // until the server closes
    got.append(buf, static_cast<size_t>(n));
  auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_EQ(got.rfind("HTTP/1.1 408 Request Timeout", 0), 0u) << got;
  EXPECT_LT(took, 3s);
  // Heads larger than 16 KiB get 431.
  fd = connect_to(srv.get().admin_port());
  std::string big = "GET /varz HTTP/1.1\r\nX-Big: " + std::string(20000, 'a');
  ASSERT_GT(::write(fd, big.data(), big.size()), 0);
  got.clear();
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    got.append(buf, static_cast<size_t>(n));
  ::close(fd);
  EXPECT_EQ(got.rfind("HTTP/1.1 431", 0), 0u) << got;
}

TEST(Admin, ProbesAndRequestsAreAnsweredWhileHundredsOfClientsStall) {
  test_server srv;
  // Hundreds of connections that never finish their request: they wait in
  // the I/O thread (the oldest give way beyond 256), never in a worker.
  std::vector<int> slow;
  for (int i = 0; i < 300; ++i) {
    int fd = connect_to(srv.get().admin_port());
    ASSERT_GE(fd, 0);
    ASSERT_GT(::write(fd, "GET /varz HTTP/1.1\r\n", 20), 0);
    slow.push_back(fd);
  }
  auto c = admin_client(srv);
  for (std::string path : {"/healthz", "/readyz", "/varz"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r) << path << ": " << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 200) << path;
  }
  auto head = c.Head("/healthz");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());
  for (int fd : slow)
    ::close(fd);
}
