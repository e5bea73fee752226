#include <gtest/gtest.h>

#include <sys/stat.h>

#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>

#include "authenticator.hpp"
#include "credentials.hpp"
#include "routing_table.hpp"

using namespace convoke;
using namespace convoke::server;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<const credential_store> parse_ok(const std::string& text) {
  auto st = credential_store::parse(text, "test.toml");
  if (!st) {
    for (auto& e : st.error())
      ADD_FAILURE() << e.text;
    return nullptr;
  }
  return *st;
}

std::string hash_of(const std::string& token) {
  return hash_token(token).value();
}

struct cli_run {
  int code;
  std::string out, err;
};

cli_run credentials_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "credentials");
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto code = credentials_command(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

std::string slurp(const std::string& path) {
  std::ifstream in{path};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Waits for an authenticator's answer (it arrives on its worker thread).
struct answer {
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<authenticator::outcome> got;

  authenticator::callback callback() {
    return [this](authenticator::outcome o, std::shared_ptr<const identity>) {
      std::lock_guard<std::mutex> guard{mtx};
      got = o;
      cv.notify_all();
    };
  }

  authenticator::outcome wait() {
    std::unique_lock<std::mutex> guard{mtx};
    EXPECT_TRUE(cv.wait_for(guard, 30s, [this] { return got.has_value(); }));
    return got.value_or(authenticator::outcome::refused);
  }
};

} // namespace

TEST(Credentials, RightsAreAllowListsOfPatternsAndAbsentMeansDenied) {
  auto st = parse_ok("[identity.planner]\n"
                     "token-hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\"\n"
                     "names = [\"planner\", \"planner.*\"]\n"
                     "publish = [\"tasks.>\"]\n"
                     "subscribe = [\"results.*\"]\n"
                     "send = [\"worker.*\"]\n"
                     "observe = \"metadata\"\n"
                     "messages-per-second = 50\n"
                     "[identity.minimal]\n"
                     "token-hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\"\n");
  ASSERT_TRUE(st);
  auto p = st->find("planner");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->may_use_name("planner"));
  EXPECT_TRUE(p->may_use_name("planner.2"));
  EXPECT_FALSE(p->may_use_name("worker.1"));
  EXPECT_TRUE(p->rights.may_publish("tasks.eu.build"));
  EXPECT_FALSE(p->rights.may_publish("tasks"));
  EXPECT_FALSE(p->rights.may_publish("")) << "a broadcast without route needs '>'";
  EXPECT_TRUE(p->rights.may_subscribe("results.x"));
  EXPECT_TRUE(p->rights.may_subscribe("results.*"));
  EXPECT_FALSE(p->rights.may_subscribe("results.>"));
  EXPECT_FALSE(p->rights.subscribes_everywhere());
  EXPECT_TRUE(p->rights.may_send("worker.7"));
  EXPECT_FALSE(p->rights.may_send("planner"));
  EXPECT_FALSE(p->rights.receive) << "absent is denied";
  EXPECT_EQ(p->rights.observe, observe_level::metadata);
  EXPECT_EQ(p->limits.messages_per_second, 50u);
  auto m = st->find("minimal");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->names, std::vector<std::string>{"minimal"}) << "names default to its own";
  EXPECT_FALSE(m->rights.may_publish("x"));
  EXPECT_FALSE(m->rights.may_subscribe("x"));
  EXPECT_FALSE(m->rights.may_send("x"));
  EXPECT_FALSE(st->find("nobody"));
}

TEST(Credentials, EveryProblemOfAFileIsReportedWithItsLine) {
  auto st = credential_store::parse("[identity.a]\n"                 // 1
                                    "token-hash = \"$argon2id$x\"\n" // 2
                                    "names = [\"a b\"]\n"            // 3
                                    "receive = \"yes\"\n"            // 4
                                    "observe = \"all\"\n"            // 5
                                    "send = [\"x.>.y\"]\n"           // 6
                                    "bytes-per-second = -1\n"        // 7
                                    "[identity.b]\n"                 // 8
                                    "publish = [\">\"]\n"            // 9
                                    "[other]\n"                      // 10
                                    "[identity.c]\n"                 // 11
                                    "token-hash = \"$argon2id$x\"\n" // 12
                                    "names = []\n",                  // 13
                                    "creds.toml");
  ASSERT_FALSE(st);
  std::string all;
  for (auto& e : st.error())
    all += e.text + "\n";
  for (auto expected :
       {"creds.toml:3: identity.a.names: 'a b' is not a valid agent name pattern",
        "creds.toml:4: identity.a.receive must be true or false",
        "creds.toml:5: identity.a.observe must be",
        "creds.toml:6: identity.a.send: 'x.>.y': '>' may only be the last token",
        "creds.toml:7: identity.a.bytes-per-second must be a whole number",
        "creds.toml:8: identity.b has no token-hash", "creds.toml:10: unknown key 'other'",
        "creds.toml:13: identity.c.names is empty"})
    EXPECT_NE(all.find(expected), std::string::npos) << expected << "\nin:\n" << all;
}

TEST(Credentials, TokensAreHashedWithArgon2idAndVerified) {
  auto token = generate_token();
  EXPECT_EQ(token.size(), 64u);
  EXPECT_NE(token, generate_token());
  auto hash = hash_of(token);
  EXPECT_EQ(hash.rfind("$argon2id$v=19$m=19456,t=2,p=1$", 0), 0u) << hash;
  EXPECT_EQ(hash.find(token), std::string::npos);
  EXPECT_TRUE(verify_token(hash, token));
  auto wrong = token;
  wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(verify_token(hash, wrong));
  EXPECT_FALSE(verify_token(hash, "short")) << "below min_token_length";
  EXPECT_FALSE(verify_token(hash, std::string(max_token_length + 1, 'a')));
  EXPECT_FALSE(verify_token("not a hash", token));
}

TEST(Credentials, TheCliAddsListsAndRemovesIdentitiesAndPrintsTheTokenOnce) {
  char tmpl[] = "/tmp/convoke-creds-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string file = std::string{tmpl} + "/credentials.toml";
  auto r = credentials_cli(
    {"add", file, "planner", "--publish", "tasks.>", "--send", "", "--observe", "metadata"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto token = r.out.substr(0, r.out.find('\n'));
  EXPECT_EQ(token.size(), 64u);
  auto text = slurp(file);
  EXPECT_EQ(text.find(token), std::string::npos) << "the file keeps only the hash";
  struct stat sb {};
  ASSERT_EQ(::stat(file.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  auto st = credential_store::load(file);
  ASSERT_TRUE(st);
  auto id = (*st)->find("planner");
  ASSERT_TRUE(id);
  EXPECT_TRUE(verify_token(id->token_hash, token));
  EXPECT_EQ(id->rights.publish, std::vector<std::string>{"tasks.>"});
  EXPECT_TRUE(id->rights.send.empty());
  EXPECT_TRUE(id->rights.subscribe.empty()) << "least privilege: only what was given";
  EXPECT_FALSE(id->rights.receive);
  EXPECT_EQ(id->rights.observe, observe_level::metadata);

  EXPECT_EQ(credentials_cli({"add", file, "planner"}).code, 2) << "exists: needs --replace";
  EXPECT_EQ(credentials_cli({"add", file, "bad name"}).code, 2);
  EXPECT_EQ(credentials_cli({"add", file, "x", "--publish", "a..b"}).code, 2);
  ASSERT_EQ(credentials_cli({"add", file, "worker", "--all", "--send", "planner"}).code, 0);
  {
    auto w = (*credential_store::load(file))->find("worker");
    ASSERT_TRUE(w);
    EXPECT_EQ(w->rights.publish, std::vector<std::string>{">"}) << "--all";
    EXPECT_EQ(w->rights.send, std::vector<std::string>{"planner"}) << "narrowed";
    EXPECT_TRUE(w->rights.receive);
    EXPECT_FALSE(w->rights.admin) << "--all is not admin";
  }
  r = credentials_cli({"add", file, "planner", "--replace"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.substr(0, 64), token) << "a replaced identity gets a new token";
  r = credentials_cli({"list", file});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("planner: names=[\"planner\"]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("worker:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("argon2"), std::string::npos) << "no secrets in the listing";
  EXPECT_EQ(credentials_cli({"remove", file, "planner"}).code, 0);
  EXPECT_EQ(credentials_cli({"remove", file, "planner"}).code, 2);
  st = credential_store::load(file);
  ASSERT_TRUE(st);
  EXPECT_FALSE((*st)->find("planner"));
  EXPECT_TRUE((*st)->find("worker"));
  // A broken file is not touched.
  std::ofstream{file, std::ios::app} << "garbage =\n";
  EXPECT_EQ(credentials_cli({"add", file, "z"}).code, 65);
  std::remove(file.c_str());
  ::rmdir(tmpl);
}

TEST(Authenticator, ChecksOffThreadAndRemembersAGoodTokenAsAKeyedDigest) {
  auto token = generate_token();
  identity id;
  id.name = "alice";
  id.names = {"alice"};
  id.token_hash = hash_of(token);
  auto store = parse_ok(format_identity(id));
  ASSERT_TRUE(store);
  authenticator auth{store};
  answer a1;
  ASSERT_TRUE(auth.submit("alice", token, a1.callback()));
  EXPECT_EQ(a1.wait(), authenticator::outcome::accepted);
  EXPECT_EQ(auth.hashed(), 1u);
  answer a2;
  ASSERT_TRUE(auth.submit("alice", token, a2.callback()));
  EXPECT_EQ(a2.wait(), authenticator::outcome::accepted);
  EXPECT_EQ(auth.hashed(), 1u) << "a remembered token costs no second argon2id";
  answer a3;
  ASSERT_TRUE(auth.submit("alice", std::string(64, '0'), a3.callback()));
  EXPECT_EQ(a3.wait(), authenticator::outcome::refused);
  EXPECT_EQ(auth.hashed(), 2u) << "a wrong token is always hashed";
  answer a4;
  ASSERT_TRUE(auth.submit("nobody", token, a4.callback()));
  EXPECT_EQ(a4.wait(), authenticator::outcome::refused);
  answer a5;
  ASSERT_TRUE(auth.submit("alice", "tiny", a5.callback()));
  EXPECT_EQ(a5.wait(), authenticator::outcome::refused);
  EXPECT_EQ(auth.hashed(), 2u) << "unknown identities and bad lengths cost nothing";
  auth.replace(store);
  answer a6;
  ASSERT_TRUE(auth.submit("alice", token, a6.callback()));
  EXPECT_EQ(a6.wait(), authenticator::outcome::accepted);
  EXPECT_EQ(auth.hashed(), 3u) << "a reload forgets remembered tokens";
}

TEST(Authenticator, ABoundedQueueRefusesWhatItCannotHold) {
  identity id;
  id.name = "alice";
  id.names = {"alice"};
  id.token_hash = hash_of(generate_token());
  authenticator auth{parse_ok(format_identity(id)), 2};
  std::vector<std::unique_ptr<answer>> queued;
  for (int i = 0; i < 10; ++i) {
    auto a = std::make_unique<answer>();
    // Distinct tokens: identical ones would share one check.
    if (auth.submit("alice", std::string(60, 'a') + std::to_string(i), a->callback()))
      queued.push_back(std::move(a));
  }
  // Two queued, plus the few the worker took meanwhile (each takes ~10 ms).
  EXPECT_GE(queued.size(), 2u);
  EXPECT_LT(queued.size(), 10u) << "nothing was refused";
  for (auto& a : queued)
    EXPECT_EQ(a->wait(), authenticator::outcome::refused) << "every accepted check is answered";
}

TEST(Authenticator, AFullQueueRefusesKnownAndUnknownIdentitiesAlike) {
  identity id;
  id.name = "alice";
  id.names = {"alice"};
  id.token_hash = hash_of(generate_token());
  authenticator auth{parse_ok(format_identity(id)), 2};
  // The worker's first answer blocks it, so the queue stays as filled.
  std::promise<void> started;
  std::promise<void> release;
  auto blocked = release.get_future().share();
  ASSERT_TRUE(auth.submit("alice", std::string(64, '1'), [&](auto, auto) {
    started.set_value();
    blocked.wait();
  }));
  started.get_future().wait();
  answer a, b;
  ASSERT_TRUE(auth.submit("alice", std::string(64, '2'), a.callback()));
  ASSERT_TRUE(auth.submit("alice", std::string(64, '3'), b.callback()));
  EXPECT_FALSE(auth.submit("alice", std::string(64, '4'), [](auto, auto) {}));
  EXPECT_FALSE(auth.submit("nobody", std::string(64, '4'), [](auto, auto) {}))
    << "a full queue must refuse an unknown identity too (server_busy for both)";
  release.set_value();
  EXPECT_EQ(a.wait(), authenticator::outcome::refused);
  EXPECT_EQ(b.wait(), authenticator::outcome::refused);
}

TEST(LoginThrottle, AnAddressIsBlockedAfterTheLimitUntilItsWindowEnds) {
  login_throttle t{3, 60s, 4};
  auto t0 = login_throttle::clock::time_point{} + 1h;
  EXPECT_EQ(t.blocked_for("10.0.0.1", t0).count(), 0);
  t.failed("10.0.0.1", t0);
  t.failed("10.0.0.1", t0 + 1s);
  EXPECT_EQ(t.blocked_for("10.0.0.1", t0 + 2s).count(), 0);
  t.failed("10.0.0.1", t0 + 2s);
  EXPECT_EQ(t.blocked_for("10.0.0.1", t0 + 3s), 57s);
  EXPECT_EQ(t.blocked_for("10.0.0.2", t0 + 3s).count(), 0) << "other addresses are not blocked";
  EXPECT_EQ(t.blocked_for("10.0.0.1", t0 + 60s).count(), 0) << "the window ended";
  EXPECT_EQ(t.tracked(), 0u) << "and the entry is gone";
  // Bounded: expired entries are swept, then the oldest goes.
  for (int i = 0; i < 10; ++i)
    t.failed("192.0.2." + std::to_string(i), t0 + std::chrono::seconds{100 + i});
  EXPECT_LE(t.tracked(), 4u);
}

TEST(ReplyGrants, EachRequestGrantsOneReplyAndMemoryIsBounded) {
  reply_grants g;
  g.grant("alice", 7);
  EXPECT_FALSE(g.use("alice", 8));
  EXPECT_FALSE(g.use("bob", 7)) << "a grant names its requester";
  EXPECT_TRUE(g.use("alice", 7));
  EXPECT_FALSE(g.use("alice", 7)) << "used up";
  for (uint64_t i = 0; i < 3 * reply_grants::max; ++i)
    g.grant("alice", 100 + i);
  EXPECT_LE(g.size(), reply_grants::max);
  EXPECT_FALSE(g.use("alice", 100)) << "the oldest were forgotten";
  EXPECT_TRUE(g.use("alice", 100 + 3 * reply_grants::max - 1));
}
