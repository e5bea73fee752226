// The agent SDK against an in-process server over loopback: hooks, sending,
// requests, tasks, blocking jobs, reconnects, refusals.

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "convoke/client/blocking_client.hpp"
#include "convoke/client/caf_interop.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/net.hpp"
#include "convoke/proto/codec.hpp"
#include "process.hpp"
#include "raw_client.hpp"
#include "test_agent.hpp"
#include "test_server.hpp"
#include "wait.hpp"

using namespace convoke;
using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

bool contains(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

size_t index_of(const std::vector<std::string>& xs, const std::string& x) {
  return static_cast<size_t>(std::find(xs.begin(), xs.end(), x) - xs.begin());
}

} // namespace

TEST(ClientAgent, HooksRunInLifecycleOrder) {
  test_server srv;
  event_log log;
  lambda_agent rx{"receiver", &log};
  rx.on_msg = [&](const message& m) {
    if (m.payload == "last")
      rx.stop();
  };
  lambda_agent tx{"sender"};
  tx.on_connected = [&](const session_info&) {
    tx.send_to("receiver", "hello");
    tx.send_to("receiver", "last");
    tx.stop();
  };
  runtime rt;
  rt.start(rx, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("connect"));
  rt.start(tx, local_options(srv.port()));
  ASSERT_TRUE(rt.wait_for(10s).has_value());
  auto ev = log.snapshot();
  ASSERT_GE(ev.size(), 5u) << testing::PrintToString(ev);
  EXPECT_EQ(ev[0], "setup");
  EXPECT_EQ(ev[1], "connect");
  EXPECT_EQ(ev[2], "message:hello");
  EXPECT_EQ(ev[3], "message:last");
  EXPECT_EQ(ev.back(), "teardown");
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "teardown"), 1);
}

TEST(ClientAgent, BroadcastDirectAndRoutes) {
  test_server srv;
  event_log la, lb, lc;
  lambda_agent a{"alice", &la};
  lambda_agent b{"bob", &lb};
  lambda_agent c{"carol", &lc};
  c.on_setup = [&] { c.on_route("news", [&](const message& m) { lc.add("news:" + m.payload); }); };
  runtime rt;
  for (auto* x : {&a, &b, &c})
    rt.start(*x, local_options(srv.port()));
  ASSERT_TRUE(la.wait_for("connect"));
  ASSERT_TRUE(lb.wait_for("connect"));
  ASSERT_TRUE(lc.wait_for("connect"));
  ASSERT_TRUE(a.post([&] {
    EXPECT_FALSE(a.broadcast("to all"));
    EXPECT_FALSE(a.send_to("bob", "to bob"));
    EXPECT_FALSE(a.publish("news", "headline"));
  }));
  EXPECT_TRUE(lb.wait_for("message:to all"));
  EXPECT_TRUE(lb.wait_for("message:to bob"));
  EXPECT_TRUE(lb.wait_for("message:headline")); // bob has no subscriptions
  EXPECT_TRUE(lc.wait_for("news:headline"));    // carol's route handler
  // Messages from one sender arrive in order: once these direct messages
  // are in, anything alice sent before them has arrived too.
  ASSERT_TRUE(a.post([&] {
    EXPECT_FALSE(a.send_to("carol", "sentinel"));
    EXPECT_FALSE(a.send_to("alice", "sentinel"));
  }));
  ASSERT_TRUE(lc.wait_for("message:sentinel"));
  ASSERT_TRUE(la.wait_for("message:sentinel"));
  EXPECT_FALSE(contains(lc.snapshot(), "message:to all")); // carol only takes "news"
  EXPECT_FALSE(contains(lc.snapshot(), "message:to bob"));
  EXPECT_FALSE(contains(la.snapshot(), "message:to all")); // not back to the sender
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(ClientAgent, PatternRouteHandlersTakeMatchingDeliveriesExactHandlersFirst) {
  test_server srv;
  event_log la, lb;
  lambda_agent a{"alice", &la};
  lambda_agent b{"bob", &lb};
  b.on_setup = [&] {
    b.on_route("weather.*.paris", [&](const message& m) { lb.add("paris:" + m.payload); });
    b.on_route("weather.>", [&](const message& m) { lb.add("weather:" + m.payload); });
    b.on_route("weather.eu.paris", [&](const message& m) { lb.add("exact:" + m.payload); });
  };
  runtime rt;
  rt.start(b, local_options(srv.port()));
  ASSERT_TRUE(lb.wait_for("connect"));
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(la.wait_for("connect"));
  ASSERT_TRUE(a.post([&] {
    EXPECT_FALSE(a.publish("weather.eu.paris", "1"));
    EXPECT_FALSE(a.publish("weather.us.paris", "2"));
    EXPECT_FALSE(a.publish("weather.us.nyc", "3"));
    EXPECT_FALSE(a.publish("news.today", "4"));
    EXPECT_EQ(a.publish("weather.*", "5"), errc::invalid_argument); // a pattern: not sent
    EXPECT_FALSE(a.send_to("bob", "sentinel"));
  }));
  ASSERT_TRUE(lb.wait_for("message:sentinel")); // in order: everything before it is in
  auto ev = lb.snapshot();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "exact:1"), 1) << testing::PrintToString(ev);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "paris:2"), 1) << testing::PrintToString(ev);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "weather:3"), 1) << testing::PrintToString(ev);
  for (auto& x : ev) // each delivery went to one handler only, news to none
    for (auto* not_expected : {"weather:1", "paris:1", "weather:2", "message:1", "message:2",
                               "message:3", "message:4", "weather:4", "message:5", "weather:5"})
      EXPECT_NE(x, not_expected);
  // Without its pattern handler (and subscription), "weather.us.paris" goes
  // to the next matching pattern.
  ASSERT_TRUE(b.post([&] {
    b.unsubscribe("weather.*.paris");
    lb.add("unsubscribed");
  }));
  ASSERT_TRUE(lb.wait_for("unsubscribed"));
  ASSERT_TRUE(a.post([&] {
    EXPECT_FALSE(a.publish("weather.us.paris", "6"));
    EXPECT_FALSE(a.send_to("bob", "sentinel 2"));
  }));
  ASSERT_TRUE(lb.wait_for("message:sentinel 2"));
  EXPECT_EQ(lb.count("weather:6"), 1u) << testing::PrintToString(lb.snapshot());
  EXPECT_EQ(lb.count("paris:6"), 0u);
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(ClientAgent, SendingWhileNotConnectedIsAnError) {
  lambda_agent a{"lonely"};
  std::error_code before;
  a.on_setup = [&] { before = a.broadcast("too early"); };
  auto opts = local_options(1); // nothing listens on port 1
  opts.reconnect.enabled = false;
  runtime rt;
  rt.start(a, opts);
  EXPECT_EQ(rt.wait(), 1); // could not connect, no retry: failure exit
  EXPECT_EQ(before, errc::not_connected);
}

TEST(ClientAgent, AMessageLargerThanTheServerAcceptsIsNotSent) {
  // The server would refuse the frame and close the connection; the SDK
  // says so instead, and the session goes on.
  test_server srv{[](auto& cfg) { cfg.max_frame_bytes = 4096; }};
  event_log log;
  lambda_agent a{"big", &log};
  a.on_connected = [&](const session_info& s) {
    log.add("limits:" + std::to_string(s.max_frame_bytes) + ":"
            + std::to_string(s.max_delivery_bytes > s.max_frame_bytes));
    auto err = a.broadcast(std::string(5000, 'x'));
    log.add(std::string{"too large:"} + to_string(static_cast<errc>(err.value())));
    log.add("small:" + std::to_string(!a.broadcast("fits")));
    a.stop();
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_EQ(rt.wait(), 0);
  EXPECT_EQ(log.count("limits:4096:1"), 1u);
  EXPECT_EQ(log.count("too large:message_too_large"), 1u);
  EXPECT_EQ(log.count("small:1"), 1u);
}

TEST(ClientAgent, RequestReplyTimeoutAndUnknownRecipient) {
  test_server srv;
  event_log log;
  event_log peers;
  lambda_agent server_agent{"adder", &peers};
  server_agent.on_msg = [&](const message& m) {
    if (m.is_request())
      server_agent.reply(m, "sum:" + std::to_string(std::stoi(m.payload) + 1));
  };
  lambda_agent silent{"silent", &peers};
  lambda_agent client{"client", &log};
  runtime rt;
  rt.start(server_agent, local_options(srv.port()));
  rt.start(silent, local_options(srv.port()));
  // The client asks once both peers are connected (not after a guessed delay).
  ASSERT_TRUE(
    peers.wait([](auto& ev) { return std::count(ev.begin(), ev.end(), "connect") == 2; }));
  client.on_connected = [&](const session_info&) {
    client.request("adder", "41", 2s).then([&](expected<message> r) {
      log.add(r ? "reply:" + r->payload : "error:" + r.error().text);
    });
    client.request("silent", "hello?", 200ms).then([&](expected<message> r) {
      if (r)
        log.add("unexpected reply");
      else
        log.add("timeout:" + to_string(errc::timeout) + ":"
                + std::to_string(r.error().code == errc::timeout));
    });
    client.request("ghost", "anyone?", 2s).then([&](expected<message> r) {
      if (r)
        log.add("unexpected reply");
      else
        log.add("refused:" + std::to_string(r.error().code == errc::refused));
    });
  };
  rt.start(client, local_options(srv.port()));
  EXPECT_TRUE(log.wait_for("reply:sum:42"));
  EXPECT_TRUE(log.wait_for("timeout:timeout:1"));
  EXPECT_TRUE(log.wait_for("refused:1"));
  EXPECT_TRUE(log.wait_for("notice:unknown_recipient"));
  EXPECT_EQ(log.count("unexpected reply"), 0u);
  rt.stop_all();
  rt.wait();
}

TEST(ClientAgent, TheDefaultNoticeHandlerLogsAMistypedRecipient) {
  // An agent that does not override on_notice must still not miss that its
  // message went nowhere: the server's WARNING Notice is logged.
  test_server srv; // sets up the tests' logging first
  temp_dir dir;
  logging::options to_file;
  to_file.level = "warn";
  to_file.file = dir.file("agent.log");
  auto configured = logging::configure(to_file);
  ASSERT_TRUE(configured) << configured.error().message();
  struct restore_logging {
    ~restore_logging() {
      logging::options quiet;
      quiet.level = "warn";
      logging::configure(quiet);
    }
  } restore;
  struct plain_agent : agent {
    using agent::agent;
    void on_connect(const session_info&) override {
      send_to("bobb", "meant for bob");
    }
  } a{"alice"};
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_TRUE(eventually([&] {
    auto text = read_file(dir.file("agent.log"));
    return text.find("server notice agent=alice code=unknown_recipient") != std::string::npos
           && text.find("bobb") != std::string::npos;
  }))
    << read_file(dir.file("agent.log"));
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(ClientAgent, ForgedRepliesFromOtherAgentsAreNotTakenForTheReply) {
  // The audit's reply forgery: request ids counted from 1 and replies were
  // matched by in_reply_to alone, so any agent could answer any request.
  test_server srv;
  event_log log;
  raw_client calc{srv.port()};
  ASSERT_TRUE(calc.hello("calc").has_welcome());
  raw_client mallory{srv.port()};
  ASSERT_TRUE(mallory.hello("mallory").has_welcome());
  lambda_agent planner{"planner", &log};
  planner.on_connected = [&](const session_info&) {
    planner.request("calc", "2+2", 5s).then([&](expected<message> r) {
      log.add(r ? "reply:" + r->sender + ":" + r->payload : "error:" + r.error().text);
    });
  };
  runtime rt;
  rt.start(planner, local_options(srv.port()));
  auto req = calc.read_envelope(5s);
  ASSERT_TRUE(req.has_value());
  ASSERT_NE(req->request_id(), 0u);
  EXPECT_GT(req->request_id(), 1'000'000u) << "request ids must not be guessable";
  // Mallory guesses small ids, then even sends the exact id it was told.
  auto forge = [&](uint64_t id) {
    v1::Frame f;
    f.mutable_envelope()->set_recipient("planner");
    f.mutable_envelope()->set_payload("forged");
    f.mutable_envelope()->set_in_reply_to(id);
    ASSERT_TRUE(mallory.send(f));
  };
  for (uint64_t id = 1; id <= 100; ++id)
    forge(id);
  forge(req->request_id());
  ASSERT_TRUE(mallory.ping()); // every forged reply is routed to the planner
  v1::Frame real;
  real.mutable_envelope()->set_recipient("planner");
  real.mutable_envelope()->set_payload("4");
  real.mutable_envelope()->set_in_reply_to(req->request_id());
  ASSERT_TRUE(calc.send(real));
  ASSERT_TRUE(log.wait_for("reply:calc:4"));
  EXPECT_EQ(log.count("reply:mallory:forged"), 0u);
  rt.stop_all();
  rt.wait();
}

TEST(ClientAgent, RepliesCarryTheRequestTraceId) {
  test_server srv;
  event_log log;
  event_log echo_log;
  lambda_agent echo{"echo", &echo_log};
  std::string request_trace;
  echo.on_msg = [&](const message& m) {
    request_trace = m.trace_id;
    echo.reply(m, m.payload);
  };
  lambda_agent asker{"asker", &log};
  asker.on_connected = [&](const session_info&) {
    asker.request("echo", "ping", 2s).then([&](expected<message> r) {
      if (r)
        log.add("trace-match:"
                + std::to_string(!r->trace_id.empty() && r->trace_id == request_trace));
      else
        log.add("error:" + r.error().text);
    });
  };
  runtime rt;
  rt.start(echo, local_options(srv.port()));
  ASSERT_TRUE(echo_log.wait_for("connect")); // the asker starts once echo is there
  rt.start(asker, local_options(srv.port()));
  EXPECT_TRUE(log.wait_for("trace-match:1"));
  rt.stop_all();
  rt.wait();
}

TEST(ClientAgent, PeriodicTaskKeepsRunningAfterAnException) {
  test_server srv;
  event_log log;
  lambda_agent a{"ticker", &log};
  int ticks = 0;
  task<void> ticker;
  a.on_setup = [&] {
    ticker = a.every(
      20ms,
      [&] {
        ++ticks;
        log.add("tick");
        if (ticks == 2)
          throw std::runtime_error("boom");
        if (ticks == 5)
          a.stop();
      },
      "ticker");
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(rt.wait_for(5s).has_value());
  EXPECT_EQ(log.count("tick"), 5u);
  EXPECT_EQ(log.count("error:task 'ticker':boom"), 1u);
  EXPECT_EQ(a.stats().errors, 1u);
}

TEST(ClientAgent, ExceptionInHandlerIsReportedAndTheAgentKeepsServing) {
  test_server srv;
  event_log log;
  lambda_agent fragile{"fragile", &log};
  fragile.on_msg = [&](const message& m) {
    if (m.payload == "bad")
      throw std::runtime_error("cannot handle this");
  };
  event_log tx_log;
  lambda_agent tx{"tx", &tx_log};
  runtime rt;
  rt.start(fragile, local_options(srv.port()));
  rt.start(tx, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("connect"));
  ASSERT_TRUE(tx_log.wait_for("connect"));
  tx.post([&] {
    tx.send_to("fragile", "bad");
    tx.send_to("fragile", "good");
  });
  EXPECT_TRUE(log.wait_for("error:on_message:cannot handle this"));
  EXPECT_TRUE(log.wait_for("message:good"));
  rt.stop_all();
  rt.wait();
}

TEST(ClientAgent, BlockingJobDoesNotDelayHeartbeatsOrMessages) {
  // The server drops agents silent for 500 ms; a 2 s blocking job must not
  // make this agent silent, and messages keep arriving while it runs.
  test_server srv{[](auto& cfg) {
    cfg.heartbeat_interval = 100ms;
    cfg.idle_timeout = 500ms;
  }};
  event_log log;
  using clock = std::chrono::steady_clock;
  std::vector<clock::time_point> arrivals;
  clock::time_point job_start;
  clock::time_point job_end;
  lambda_agent worker{"worker", &log};
  worker.on_connected = [&](const session_info&) {
    job_start = clock::now();
    worker
      .run_blocking(
        [] {
          std::this_thread::sleep_for(2s); // the blocking work itself, not a wait
          return 6 * 7;
        },
        "slow computation")
      .then([&](expected<int> answer) {
        job_end = clock::now();
        log.add("job:" + (answer ? std::to_string(*answer) : answer.error().text));
        worker.stop();
      });
  };
  worker.on_msg = [&](const message&) { arrivals.push_back(clock::now()); };
  lambda_agent ticker{"ticker"};
  task<void> ticks;
  ticker.on_connected = [&](const session_info&) {
    ticks = ticker.every(100ms, [&] { ticker.send_to("worker", "tick"); });
  };
  runtime rt;
  rt.start(worker, local_options(srv.port()));
  rt.start(ticker, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("job:42", 10s));
  rt.stop_all();
  rt.wait();
  auto ev = log.snapshot();
  EXPECT_FALSE(contains(ev, "disconnect:idle_timeout")) << testing::PrintToString(ev);
  EXPECT_EQ(log.count("connect"), 1u) << "the session was never interrupted";
  EXPECT_EQ(srv.stats().timeouts, 0u);
  EXPECT_GE(job_end - job_start, 2s);
  // Messages arrived throughout the job, not in a burst after it.
  size_t during = 0;
  for (auto t : arrivals)
    during += t > job_start + 200ms && t < job_end - 200ms;
  EXPECT_GE(during, 10u) << "messages were held up by the blocking job";
}

TEST(ClientAgent, BlockingJobFailureReachesItsContinuationAndCancelIsReportedOnce) {
  test_server srv;
  event_log log;
  lambda_agent a{"jobs", &log};
  std::atomic<bool> saw_cancel{false};
  task<int> unwatched;
  task<int> watched;
  task<void> cancellable;
  // The agent stops once all three outcomes are in (in whatever order).
  int settled = 0;
  auto one_more = [&] {
    if (++settled == 3)
      a.stop();
  };
  a.on_err = [&](const error_info& e) {
    if (e.where == "task 'unwatched'")
      one_more();
  };
  a.on_connected = [&](const session_info&) {
    // Without a continuation, a failure goes to on_error.
    unwatched
      = a.run_blocking([]() -> int { throw std::runtime_error("disk on fire"); }, "unwatched");
    // With one, the continuation gets it (and on_error does not).
    watched = a.run_blocking([]() -> int { throw std::runtime_error("out of paper"); }, "watched");
    watched.then([&](expected<int> r) {
      log.add(r ? "unexpected success"
                : "watched:" + to_string(static_cast<errc>(r.error().code.value())) + ":"
                    + r.error().text);
      one_more();
    });
    cancellable = a.run_blocking(
      [&](const cancel_token& tok) {
        // Tell the agent the job runs (no guessed delay), then wait for the
        // token.
        a.post([&] { log.add("cancel:" + std::to_string(cancellable.cancel())); });
        while (!tok.cancelled())
          std::this_thread::sleep_for(1ms);
        saw_cancel = true;
      },
      "cancellable");
    cancellable.then([&](expected<void> r) {
      log.add(r ? "cancelled job completed"
                : "outcome:" + to_string(static_cast<errc>(r.error().code.value())));
      log.add("second cancel:" + std::to_string(cancellable.cancel()));
      one_more();
    });
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(rt.wait_for(10s).has_value());
  EXPECT_EQ(log.count("error:task 'unwatched':disk on fire"), 1u)
    << testing::PrintToString(log.snapshot());
  EXPECT_EQ(log.count("watched:failed:out of paper"), 1u);
  EXPECT_EQ(log.count("error:task 'watched':out of paper"), 0u);
  EXPECT_EQ(log.count("cancel:1"), 1u);
  EXPECT_EQ(log.count("outcome:cancelled"), 1u);
  EXPECT_EQ(log.count("second cancel:0"), 1u);
  EXPECT_EQ(log.count("cancelled job completed"), 0u);
  EXPECT_TRUE(eventually([&] { return saw_cancel.load(); }));
  EXPECT_EQ(cancellable.status(), task_status::cancelled);
  EXPECT_EQ(watched.status(), task_status::failed);
}

TEST(ClientAgent, ReconnectsWithBackoffAndResubscribes) {
  event_log log;
  uint16_t port = 0;
  lambda_agent sub{"subscriber", &log};
  sub.on_setup = [&] { sub.subscribe("alerts"); };
  lambda_agent::message_handler h;
  std::optional<runtime> rt;
  {
    test_server first;
    port = first.port();
    rt.emplace();
    rt->start(sub, local_options(port));
    ASSERT_TRUE(log.wait_for("connect"));
    first.stop(); // Goodbye(shutdown): the agent reconnects
  }
  ASSERT_TRUE(log.wait_for("disconnect:shutdown"));
  ASSERT_TRUE(log.wait_for("disconnect:connect_failed")); // no server: an attempt failed
  test_server second{[port](auto& cfg) { cfg.port = port; }};
  ASSERT_TRUE(log.wait_for("reconnect", 5s));
  // The subscription travelled in the new Hello: only "alerts" arrives.
  raw_client pub{second.port()};
  ASSERT_TRUE(pub.hello("pub").has_welcome());
  pub.send_envelope("", "noise", "chatter");
  pub.send_envelope("", "fire", "alerts");
  EXPECT_TRUE(log.wait_for("message:fire"));
  EXPECT_EQ(log.count("message:noise"), 0u);
  auto ev = log.snapshot();
  EXPECT_GE(std::count(ev.begin(), ev.end(), "disconnect:connect_failed"), 1)
    << testing::PrintToString(ev);
  rt->stop_all();
  EXPECT_EQ(rt->wait(), 0);
}

TEST(ClientAgent, NameTakenIsFatalAndEndsTheRunWithAnError) {
  test_server srv;
  event_log log;
  raw_client holder{srv.port()};
  ASSERT_TRUE(holder.hello("taken").has_welcome());
  lambda_agent late{"taken", &log};
  runtime rt;
  rt.start(late, local_options(srv.port()));
  EXPECT_EQ(rt.wait(), 1);
  EXPECT_TRUE(contains(log.snapshot(), "disconnect:name_taken"));
  EXPECT_EQ(log.snapshot().back(), "teardown");
}

TEST(ClientAgent, StopWhileServerIsUnreachableEndsPromptly) {
  event_log log;
  lambda_agent a{"patient", &log};
  runtime rt;
  rt.start(a, local_options(1));
  ASSERT_TRUE(log.wait_for("disconnect:connect_failed"));
  auto t0 = std::chrono::steady_clock::now();
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(log.snapshot().back(), "teardown");
}

TEST(ClientAgent, TeardownCanStillSendAndTheServerSeesAGoodbye) {
  test_server srv;
  raw_client watcher{srv.port()};
  ASSERT_TRUE(watcher.hello("watcher").has_welcome());
  event_log log;
  lambda_agent a{"leaver", &log};
  a.on_connected = [&](const session_info&) { a.stop(3); };
  a.on_teardown = [&] { a.send_to("watcher", "bye from teardown"); };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_EQ(rt.wait(), 3);
  auto e = watcher.read_envelope();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->payload(), "bye from teardown");
}

TEST(BlockingClient, RequestReplyTimeoutUnknownRecipientAndReceive) {
  test_server srv;
  lambda_agent echo{"echo"};
  event_log log;
  echo.on_connected = [&](const session_info&) { log.add("up"); };
  echo.on_msg = [&](const message& m) {
    if (m.is_request())
      echo.reply(m, "re:" + m.payload);
    else
      echo.send_to(m.sender, "hello back");
  };
  runtime rt;
  rt.start(echo, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("up"));
  blocking_client c{local_options(srv.port()), "script"};
  std::string why;
  ASSERT_FALSE(c.connect(&why)) << why;
  EXPECT_EQ(c.session().agent_name, "script");
  auto r = c.request("echo", "x", 2s);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->payload, "re:x");
  request_error err;
  EXPECT_FALSE(c.request("ghost", "x", 2s, &err));
  EXPECT_EQ(err.code, errc::refused);
  EXPECT_NE(err.text.find("unknown_recipient"), std::string::npos) << err.text;
  event_log silent_log;
  lambda_agent silent{"silent", &silent_log};
  rt.start(silent, local_options(srv.port()));
  ASSERT_TRUE(silent_log.wait_for("connect"));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.request("silent", "x", 200ms, &err));
  EXPECT_EQ(err.code, errc::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  ASSERT_FALSE(c.send_to("echo", "plain"));
  auto m = c.receive(2s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, "hello back");
  c.close();
  EXPECT_FALSE(c.connected());
  EXPECT_EQ(c.send_to("echo", "after close"), errc::not_connected);
  rt.stop_all();
  rt.wait();
}

TEST(BlockingClient, RefusalAndUnreachableServerAreReported) {
  test_server srv;
  raw_client holder{srv.port()};
  ASSERT_TRUE(holder.hello("taken").has_welcome());
  blocking_client dup{local_options(srv.port()), "taken"};
  std::string why;
  EXPECT_EQ(dup.connect(&why), errc::refused);
  EXPECT_NE(why.find("name_taken"), std::string::npos) << why;
  blocking_client nowhere{local_options(1), "x"};
  EXPECT_EQ(nowhere.connect(&why), errc::not_connected);
  EXPECT_NE(why.find("127.0.0.1:1"), std::string::npos) << why;
}

TEST(ClientAgent, PendingRequestsFailWithStoppedBeforeTeardown) {
  test_server srv;
  event_log log;
  event_log silent_log;
  lambda_agent silent{"silent", &silent_log};
  lambda_agent a{"asker", &log};
  a.on_connected = [&](const session_info&) {
    a.request("silent", "anyone?", 10s).then([&](expected<message> r) {
      log.add(r ? "unexpected reply"
                : "request:" + to_string(static_cast<errc>(r.error().code.value())));
    });
    a.stop(); // the request is still pending
  };
  a.on_teardown = [&] {
    // A request from teardown fails at once instead of dangling.
    a.request("silent", "late", 1s).then([&](expected<message> r) {
      log.add(r ? "unexpected reply"
                : "late:" + to_string(static_cast<errc>(r.error().code.value())));
    });
  };
  runtime rt;
  rt.start(silent, local_options(srv.port()));
  ASSERT_TRUE(silent_log.wait_for("connect"));
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("teardown"));
  rt.stop_all();
  rt.wait();
  auto ev = log.snapshot();
  EXPECT_LT(index_of(ev, "request:stopped"), index_of(ev, "teardown"))
    << testing::PrintToString(ev);
  EXPECT_TRUE(contains(ev, "late:stopped"));
}

namespace {

/// Kills the agent's actor the way CAF does when an exception escapes a
/// handler installed through the CAF interop (call it on the agent).
void die_from_an_unguarded_handler(agent& a) {
  using boom_atom = caf::atom_constant<caf::atom("boom")>;
  interop::become(
    a, caf::message_handler{[](boom_atom) -> void { throw std::runtime_error("unguarded"); }});
  auto self = interop::self(a);
  self->send(self, boom_atom::value);
}

} // namespace

TEST(ClientAgent, AbnormalActorDeathStillRunsTeardownAndFails) {
  test_server srv;
  event_log log;
  lambda_agent a{"fragile", &log};
  a.on_connected = [&](const session_info&) {
    // Teardown must still run, and the run must fail.
    die_from_an_unguarded_handler(a);
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_EQ(rt.wait(), 1);
  EXPECT_EQ(log.count("teardown"), 1u) << testing::PrintToString(log.snapshot());
}

TEST(ClientAgent, LinkedChildEndingNormallyDoesNotStopTheAgent) {
  test_server srv;
  event_log log;
  lambda_agent a{"parent", &log};
  task<void> later;
  a.on_connected = [&](const session_info&) {
    auto self = interop::self(a);
    self->spawn<caf::linked>([](caf::event_based_actor* child) { child->quit(); });
    // An observation window (nothing to wait for: the agent must not stop).
    later = a.after(200ms, [&] {
      log.add("still running");
      a.stop();
    });
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_EQ(rt.wait(), 0);
  EXPECT_TRUE(contains(log.snapshot(), "still running"));
}

TEST(ClientAgent, RouteHandlersCanBeRegisteredBeforeStart) {
  test_server srv;
  event_log log;
  lambda_agent sub{"early", &log};
  sub.on_route("alerts", [&](const message& m) { log.add("alert:" + m.payload); });
  runtime rt;
  rt.start(sub, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("connect")); // its routes were in its Hello
  raw_client pub{srv.port()};
  ASSERT_TRUE(pub.hello("pub").has_welcome());
  pub.send_envelope("", "fire", "alerts");
  EXPECT_TRUE(log.wait_for("alert:fire"));
  rt.stop_all();
  rt.wait();
}

TEST(BlockingClient, AMessageLargerThanTheServerAcceptsIsNotSent) {
  test_server srv{[](auto& cfg) { cfg.max_frame_bytes = 4096; }};
  event_log log;
  lambda_agent echo{"echo", &log};
  echo.on_msg = [&](const message& m) { echo.send_to(m.sender, "got " + m.payload); };
  runtime rt;
  rt.start(echo, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("connect"));
  blocking_client c{local_options(srv.port()), "script"};
  std::string why;
  ASSERT_FALSE(c.connect(&why)) << why;
  EXPECT_EQ(c.send_to("echo", std::string(5000, 'x')), errc::message_too_large);
  // Not sent, so the connection is still good.
  ASSERT_FALSE(c.send_to("echo", "small"));
  auto m = c.receive(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->payload, "got small");
  EXPECT_TRUE(c.connected());
  rt.stop_all();
  rt.wait();
}

TEST(BlockingClient, ConnectCanBeRetriedAfterARefusal) {
  test_server srv;
  auto holder = std::make_unique<raw_client>(srv.port());
  ASSERT_TRUE(holder->hello("script").has_welcome());
  blocking_client c{local_options(srv.port()), "script"};
  std::string why;
  EXPECT_EQ(c.connect(&why), errc::refused);
  holder.reset(); // the name becomes free once the server saw the close
  ASSERT_TRUE(eventually([&] { return srv.stats().agents == 0; }));
  EXPECT_FALSE(c.connect(&why)) << why;
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(c.session().agent_name, "script");
}

// -- task handles (task.hpp) on a running agent ---------------------------------

namespace {

/// A child task that never ends on its own.
void tick_forever(task_context<void>& ctx) {
  ctx.after(1ms, [&ctx] { tick_forever(ctx); });
}

} // namespace

TEST(AgentTasks, TimersStartedBeforeTheAgentRunsStartWithIt) {
  test_server srv;
  event_log log;
  lambda_agent a{"early", &log};
  // Before the agent runs: queued like subscriptions, not dropped.
  auto once = a.after(
    10ms, [&] { log.add("after fired"); }, "early timer");
  int ticks = 0;
  auto periodic = a.every(5ms, [&] {
    if (++ticks == 3)
      log.add("third tick");
  });
  EXPECT_TRUE(once.running());
  once.then([&](expected<void> r) { log.add(r ? "once:ok" : "once:" + r.error().text); });
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_TRUE(log.wait_for("after fired"));
  EXPECT_TRUE(log.wait_for("once:ok"));
  EXPECT_TRUE(log.wait_for("third tick"));
  a.post([&] {
    log.add("cancel:" + std::to_string(periodic.cancel()));
    log.add("status:" + std::to_string(static_cast<int>(once.status())));
  });
  EXPECT_TRUE(log.wait_for("cancel:1"));
  EXPECT_TRUE(log.wait_for("status:" + std::to_string(static_cast<int>(task_status::succeeded))));
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
}

TEST(AgentTasks, TasksStartedInOnConnectBelongToTheSessionAndAreNotDuplicated) {
  event_log log;
  uint16_t port = 0;
  lambda_agent a{"sessions", &log};
  int generation = 0;
  task<void> ticker;
  task<void> keeper;
  a.on_connected = [&](const session_info&) {
    int gen = ++generation;
    ticker = a.every(
      10ms, [&log, gen] { log.add("tick:" + std::to_string(gen)); }, "ticker");
    ticker.then([&log, gen](expected<void> r) {
      log.add("ticker " + std::to_string(gen) + " ended:" + (r ? "ok" : r.error().text));
    });
    if (gen == 1) { // asked for explicitly: lives across sessions
      task_options opts{"keeper"};
      opts.outlive_session = true;
      keeper = a.every(
        10ms, [&log] { log.add("keeper tick"); }, opts);
    }
  };
  std::optional<runtime> rt;
  {
    test_server first;
    port = first.port();
    rt.emplace();
    rt->start(a, local_options(port));
    ASSERT_TRUE(log.wait_for("tick:1"));
    first.stop(); // Goodbye(shutdown): the agent reconnects
  }
  ASSERT_TRUE(log.wait_for("ticker 1 ended:the session ended"));
  test_server second{[port](auto& cfg) { cfg.port = port; }};
  ASSERT_TRUE(log.wait_for("reconnect", 5s));
  ASSERT_TRUE(log.wait_for("tick:2"));
  auto before = log.count("keeper tick");
  ASSERT_TRUE(eventually([&] { return log.count("keeper tick") > before; }));
  rt->stop_all();
  EXPECT_EQ(rt->wait(), 0);
  auto ev = log.snapshot();
  // The first session's ticker stopped with its session; only one ran after.
  auto ended = index_of(ev, "ticker 1 ended:the session ended");
  for (size_t i = ended; i < ev.size(); ++i)
    EXPECT_NE(ev[i], "tick:1") << "at " << i << ": " << testing::PrintToString(ev);
  EXPECT_EQ(generation, 2);
  EXPECT_TRUE(contains(ev, "ticker 2 ended:the agent stopped"));
}

TEST(AgentTasks, SpawnedTasksSucceedFailAndCancelAfterTheirCleanup) {
  test_server srv;
  event_log log;
  lambda_agent a{"parent", &log};
  std::atomic<bool> cleaned{false};
  task<std::string> ok, thrown, forgotten;
  task<void> endless;
  a.on_connected = [&](const session_info&) {
    ok = a.spawn_task<std::string>(
      [](task_context<std::string>& ctx) { ctx.after(5ms, [&ctx] { ctx.succeed("forty-two"); }); });
    ok.then([&](expected<std::string> r) { log.add("ok:" + (r ? *r : r.error().text)); });
    thrown = a.spawn_task<std::string>([](task_context<std::string>& ctx) {
      ctx.after(1ms, [] { throw std::runtime_error("model offline"); });
    });
    thrown.then([&](expected<std::string> r) {
      log.add(
        "thrown:"
        + (r ? *r : to_string(static_cast<errc>(r.error().code.value())) + ":" + r.error().text));
    });
    forgotten = a.spawn_task<std::string>([](task_context<std::string>&) {});
    forgotten.then([&](expected<std::string> r) { log.add("forgotten:" + r.error().text); });
    endless = a.spawn_task<void>([&](task_context<void>& ctx) {
      ctx.on_cancel([&] { cleaned = true; });
      tick_forever(ctx);
      a.post([&] { log.add("cancel:" + std::to_string(endless.cancel())); });
    });
    endless.then([&](expected<void> r) {
      // The cleanup ran on the child before this.
      log.add("endless:" + r.error().text + ":cleaned=" + std::to_string(cleaned.load()));
    });
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_TRUE(log.wait_for("ok:forty-two"));
  EXPECT_TRUE(log.wait_for("thrown:failed:model offline"));
  EXPECT_TRUE(log.wait_for("forgotten:the task ended without calling succeed() or fail()"));
  EXPECT_TRUE(log.wait_for("cancel:1"));
  EXPECT_TRUE(log.wait_for("endless:cancelled:cleaned=1"));
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 0);
  EXPECT_EQ(log.count("endless:cancelled:cleaned=1"), 1u);
  // The thrown task and the one that ended without an outcome are errors.
  EXPECT_EQ(a.stats().errors, 2u);
}

TEST(AgentTasks, ARequestNeverReportsBeforeItReturns) {
  test_server srv;
  event_log log;
  lambda_agent a{"asker", &log};
  // Before the agent runs: fails (not connected), reported once it runs.
  bool returned_early = false;
  auto early = a.request("anyone", "x", 1s);
  returned_early = true;
  early.then([&](expected<message> r) {
    log.add("early:" + std::to_string(returned_early) + ":"
            + to_string(static_cast<errc>(r.error().code.value())));
  });
  a.on_connected = [&](const session_info&) {
    auto returned = std::make_shared<bool>(false);
    auto bad = a.request("", "no recipient", 1s);
    *returned = true;
    bad.then([&log, returned](expected<message> r) {
      log.add("bad:" + std::to_string(*returned) + ":"
              + to_string(static_cast<errc>(r.error().code.value())));
    });
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_TRUE(log.wait_for("early:1:not_connected"));
  EXPECT_TRUE(log.wait_for("bad:1:invalid_argument"));
  rt.stop_all();
  rt.wait();
}

TEST(AgentTasks, RunUntilCompleteReturnsTheResultOrTimesOut) {
  test_server srv;
  event_log peers;
  lambda_agent echo{"echo", &peers};
  echo.on_msg = [&](const message& m) {
    if (m.is_request() && m.payload != "ignore me")
      echo.reply(m, "re:" + m.payload);
  };
  runtime rt;
  rt.start(echo, local_options(srv.port()));
  ASSERT_TRUE(peers.wait_for("connect"));
  auto reply = run_until_complete<message>(
    local_options(srv.port()), "script", [](agent& a) { return a.request("echo", "hi", 5s); }, 5s);
  ASSERT_TRUE(reply.has_value()) << reply.error().message();
  EXPECT_EQ(reply->payload, "re:hi");
  auto t0 = std::chrono::steady_clock::now();
  auto late = run_until_complete<message>(
    local_options(srv.port()), "script2",
    [](agent& a) { return a.request("echo", "ignore me", 30s); }, 200ms);
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(late.error().code, errc::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  auto refused = run_until_complete<message>(
    local_options(srv.port()), "script3", [](agent& a) { return a.request("ghost", "x", 5s); }, 5s);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, errc::refused);
  rt.stop_all();
  rt.wait();
}

// -- from an outside review of the task handles ----------------------------------
// Each test failed before its fix.

#include <future>

namespace {

std::string outcome_text(const error& e) {
  return to_string(static_cast<errc>(e.code.value()));
}

} // namespace

TEST(AgentTasksReview, CancellingAChildTaskThatAlreadyEndedStillDeliversItsOutcome) {
  // A child task that ended (here: at once) and is then cancelled: the
  // cancellation is delivered now. Before the fix, cancel() held the delivery
  // for a child_gone message that a finished child never sends.
  test_server srv;
  event_log log;
  lambda_agent a{"racer", &log};
  task<int> quick;
  a.on_connected = [&](const session_info&) {
    quick = a.spawn_task<int>([](task_context<int>& ctx) { ctx.succeed(7); }, "quick");
    quick.then([&](expected<int> r) {
      log.add(r ? "quick:" + std::to_string(*r) : "quick:" + outcome_text(r.error()));
    });
    log.add("cancel:" + std::to_string(quick.cancel()));
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("cancel:1"));
  EXPECT_TRUE(log.wait_for("quick:cancelled", 2s))
    << "no outcome while the agent runs: " << testing::PrintToString(log.snapshot());
  rt.stop_all();
  rt.wait();
  EXPECT_EQ(log.count("quick:cancelled"), 1u) << testing::PrintToString(log.snapshot());
}

TEST(AgentTasksReview, AtStopAChildTaskCleansUpBeforeItsContinuationLearnsOfIt) {
  // At stop, a child task's ctx.on_cancel runs before its continuation learns
  // of the cancellation, and the run is not over before the cleanup ran.
  // Before the fix the stop delivered at once without waiting for the child.
  test_server srv;
  event_log log;
  lambda_agent a{"stopper", &log};
  std::promise<void> gate;
  auto opened = gate.get_future().share();
  std::atomic<bool> cleaned{false};
  task<void> worker;
  a.on_connected = [&](const session_info&) {
    worker = a.spawn_task<void>([&, opened](task_context<void>& ctx) {
      // The cleanup takes a while (closing a file, a rollback...).
      ctx.on_cancel([&, opened] {
        opened.wait();
        cleaned = true;
      });
      tick_forever(ctx);
      a.post([&] { log.add("child running"); });
    });
    worker.then([&](expected<void> r) {
      log.add("worker:" + (r ? std::string{"ok"} : outcome_text(r.error()))
              + ":cleaned=" + std::to_string(cleaned.load()));
    });
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("child running"));
  rt.stop_all();
  // A correct SDK cannot deliver before the cleanup, which waits for us.
  bool early = log.wait_for("worker:cancelled:cleaned=0", 1s);
  // Nor may the run be over while the child still runs agent-written code
  // (its cleanup may use what the agent object owns).
  bool over_before_cleanup = rt.wait_for(500ms).has_value() && !cleaned;
  gate.set_value();
  rt.wait();
  EXPECT_FALSE(early) << "the continuation ran before the child's cleanup: "
                      << testing::PrintToString(log.snapshot());
  EXPECT_FALSE(over_before_cleanup) << "runtime::wait returned before the child's cleanup ran";
}

TEST(AgentTasksReview, AnAbnormalActorDeathStillEndsEveryTaskAndTeardownMayCancel) {
  // When CAF quits the actor on an exception escaping an interop handler,
  // every task still ends (cancelled, delivered), teardown() runs on the
  // actor, and a handle kept after the run is harmless. Before the fix the
  // continuations were lost, and teardown() (run from the exit functor after
  // the state was destroyed) or a later cancel() erased from a destroyed map:
  // a heap-use-after-free under ASan.
  test_server srv;
  event_log log;
  lambda_agent a{"fragile", &log};
  task<void> heartbeat;
  a.on_connected = [&](const session_info&) {
    heartbeat = a.every(
      1h, [] {}, "heartbeat");
    heartbeat.then([&](expected<void> r) {
      log.add("heartbeat:" + (r ? std::string{"ok"} : outcome_text(r.error())));
    });
    die_from_an_unguarded_handler(a);
  };
  a.on_teardown = [&] { log.add("teardown cancel:" + std::to_string(heartbeat.cancel())); };
  {
    runtime rt;
    rt.start(a, local_options(srv.port()));
    EXPECT_EQ(rt.wait(), 1);
  } // the actor system is gone, and with it the agent's actor
  EXPECT_NE(heartbeat.status(), task_status::running);
  EXPECT_FALSE(heartbeat.cancel());
  auto ev = log.snapshot();
  EXPECT_EQ(log.count("heartbeat:cancelled"), 1u) << testing::PrintToString(ev);
  // teardown() runs on the actor, before the tasks end (as in a normal
  // stop), so cancelling there is safe and works.
  EXPECT_EQ(log.count("teardown cancel:1"), 1u) << testing::PrintToString(ev);
  EXPECT_EQ(log.count("teardown"), 1u);
}

TEST(AgentTasksReview, StopNeverRunsAContinuationInsideTheCallThatCancelledIt) {
  // agent::stop() ends every task, but no continuation runs inside the call
  // (often made from another continuation). Before the fix they all ran
  // nested in stop().
  test_server srv;
  event_log log;
  lambda_agent a{"quitter", &log};
  bool inside_stop = false;
  task<void> pending;
  a.on_connected = [&](const session_info&) {
    pending = a.after(
      1h, [] {}, "pending");
    pending.then([&](expected<void> r) {
      log.add("pending:" + (r ? std::string{"ok"} : outcome_text(r.error()))
              + ":inside stop()=" + std::to_string(inside_stop));
    });
    inside_stop = true;
    a.stop();
    inside_stop = false;
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  EXPECT_EQ(rt.wait(), 0);
  EXPECT_EQ(log.count("pending:cancelled:inside stop()=0"), 1u)
    << testing::PrintToString(log.snapshot());
}

TEST(AgentTasksReview, AnUnhandledTaskFailureCountsAsOneError) {
  // A failed task without a continuation is one error. Before the fix
  // on_timer/on_worker_done counted it and report_error counted it again.
  test_server srv;
  event_log log;
  lambda_agent a{"counter", &log};
  task<void> dropped;
  a.on_connected = [&](const session_info&) {
    dropped = a.after(
      1ms, [] { throw std::runtime_error("boom"); }, "fire and forget");
  };
  runtime rt;
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("error:task 'fire and forget':boom"));
  a.post([&] { a.stop(); });
  rt.wait();
  EXPECT_EQ(log.count("error:task 'fire and forget':boom"), 1u);
  EXPECT_EQ(a.stats().errors, 1u) << "one failure, one on_error call";
}

TEST(AgentTasksReview, RunUntilCompleteReportsAnUnreachableServer) {
  // A script fails fast when its first connection attempt fails. Before the
  // fix the default reconnect policy kept trying until the timeout.
  uint16_t port = 0;
  {
    test_server gone;
    port = gone.port();
  }
  auto r = run_until_complete<message>(
    local_options(port), "script", [](agent& a) { return a.request("echo", "hi", 1s); }, 1s);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, errc::not_connected) << r.error().message();
}

TEST(AgentTasksReview, RunUntilCompleteReportsAStartThatThrowsAtOnce) {
  // A `start` that throws is the outcome (errc::failed), at once. Before the
  // fix it went to on_error and the caller waited the whole timeout.
  test_server srv;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_until_complete<int>(
    local_options(srv.port()), "script",
    [](agent&) -> task<int> { throw std::runtime_error("bad input"); }, 3s);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().code, errc::timeout) << r.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(ClientAgent, AFrameAboveTheAnnouncedDeliveryLimitIsRefusedBeforeItsBodyArrives) {
  // A broken or hostile server announces 1 KiB deliveries, then a 10 MB
  // frame. The SDK must refuse it on its length prefix, not buffer 10 MB
  // first (the connection used to accept up to 64 MiB).
  auto listener = net::tcp_listen("127.0.0.1", 0, 4);
  ASSERT_TRUE(listener) << listener.error().message();
  event_log log;
  lambda_agent a{"victim", &log};
  a.on_connected = [&](const session_info&) { a.broadcast("welcome processed"); };
  a.on_disconnected = [&](const disconnect_info& d) { log.add("reason:" + d.reason); };
  auto opts = local_options(listener->port);
  opts.reconnect.enabled = false;
  runtime rt;
  rt.start(a, opts);
  // The fake server: blocking accept, read frames, write raw bytes.
  ASSERT_TRUE(net::set_blocking(listener->fd, true));
  int fd = ::accept(listener->fd, nullptr, nullptr);
  ASSERT_GE(fd, 0);
  net::set_receive_timeout(fd, 5s);
  proto::frame_splitter in{1 << 20};
  auto read_frame = [&](v1::Frame& f) {
    char buf[4096];
    std::string_view body;
    while (!in.next(body)) {
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        return false;
      in.append(buf, static_cast<size_t>(n));
    }
    return proto::decode_frame(body, f) == proto::frame_error::none;
  };
  v1::Frame hello;
  ASSERT_TRUE(read_frame(hello));
  ASSERT_TRUE(hello.has_hello());
  v1::Frame welcome;
  welcome.mutable_welcome()->set_agent_name("victim");
  welcome.mutable_welcome()->set_session_id(1);
  welcome.mutable_welcome()->mutable_limits()->set_max_frame_bytes(1024);
  welcome.mutable_welcome()->mutable_limits()->set_max_delivery_bytes(1024);
  std::vector<char> out;
  proto::append_frame(welcome, out);
  ASSERT_TRUE(net::write_all(fd, out.data(), out.size()));
  // The agent's broadcast from on_connect: by now its connection has the
  // limit (the agent sends it before running on_connect).
  v1::Frame sent;
  ASSERT_TRUE(read_frame(sent));
  ASSERT_TRUE(sent.has_envelope());
  char header[proto::header_size];
  proto::write_header(header, 10'000'000);
  ASSERT_TRUE(net::write_all(fd, header, sizeof header));
  ASSERT_TRUE(net::write_all(fd, "abc", 3)); // a body that never completes
  // on_disconnected records the reason, then on_disconnect the code: wait
  // for both.
  bool refused = log.wait(
    [](const std::vector<std::string>& ev) {
      return std::any_of(ev.begin(), ev.end(),
                         [](const std::string& e) {
                           return e.find("reason:") == 0
                                  && e.find("frame_too_large") != std::string::npos;
                         })
             && std::find(ev.begin(), ev.end(), "disconnect:connection_lost") != ev.end();
    },
    5s);
  ::close(fd); // whatever happened, the run can end now
  ::close(listener->fd);
  EXPECT_TRUE(refused) << "the agent waited for a 10 MB body: "
                       << testing::PrintToString(log.snapshot());
  EXPECT_TRUE(contains(log.snapshot(), "disconnect:connection_lost"));
  rt.stop_all();
  EXPECT_EQ(rt.wait(), 1);
}

TEST(ClientAgent, NoHandlerRunsAfterTeardown) {
  // teardown() closes what handlers use (examples/concepts/teardown.cpp
  // closes its file); messages still in flight while the agent says Goodbye
  // must not reach on_message afterwards.
  test_server srv;
  event_log log;
  lambda_agent sink{"sink", nullptr};
  sink.on_connected = [&](const session_info&) { log.add("connect"); };
  std::atomic<bool> closed{false};
  std::atomic<int> after{0};
  std::atomic<int> got{0};
  sink.on_msg = [&](const message&) {
    ++got;
    if (closed)
      ++after;
  };
  sink.on_teardown = [&] { closed = true; };
  runtime rt;
  rt.start(sink, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("connect"));
  raw_client flood{srv.port()};
  ASSERT_TRUE(flood.hello("flood").has_welcome());
  // A steady stream, and the sink stops in the middle of it.
  std::atomic<bool> stop_flood{false};
  std::thread sender([&] {
    while (!stop_flood)
      if (!flood.send_envelope("sink", "x", ""))
        break;
  });
  ASSERT_TRUE(eventually([&] { return got > 100; }));
  sink.post([&] { sink.stop(); });
  rt.wait();
  stop_flood = true;
  sender.join();
  EXPECT_EQ(after.load(), 0) << "on_message ran after teardown";
  EXPECT_TRUE(closed.load());
}

TEST(ClientAgent, AQuarantinedAgentReconnectsOnlyOnceTheServerSaysItMay) {
  // Reconnecting sooner would only be refused again: the SDK waits for the
  // retry_after of the quarantined Notice, not its own (200 ms) backoff.
  test_server srv{[](auto& cfg) {
    cfg.messages_per_second = 1;
    cfg.messages_burst = 1;
    cfg.quarantine_after = 1; // the first refused message
    cfg.quarantine_for = 2s;
  }};
  event_log log;
  lambda_agent a{"flooder", &log};
  std::atomic<int64_t> retry_after_ms{-1};
  std::atomic<int64_t> retry_in_ms{-1};
  std::atomic<int> connects{0};
  a.on_connected = [&](const session_info&) {
    if (connects++ > 0) {
      a.stop();
      return;
    }
    a.broadcast("within the limit");
    a.broadcast("over it: quarantined");
  };
  a.on_note = [&](const notice& n) {
    if (n.code == "quarantined")
      retry_after_ms = n.retry_after.count();
  };
  a.on_disconnected = [&](const disconnect_info& d) {
    if (d.code == "quarantined")
      retry_in_ms = d.retry_in.count();
  };
  runtime rt;
  auto t0 = std::chrono::steady_clock::now();
  rt.start(a, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("reconnect", 10s)) << testing::PrintToString(log.snapshot());
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(rt.wait_for(10s).has_value());
  EXPECT_EQ(retry_after_ms.load(), 2000);
  EXPECT_GE(retry_in_ms.load(), 2000) << "the SDK's own backoff is 200 ms at most";
  EXPECT_GE(waited, 2s);
  EXPECT_EQ(log.count("disconnect:quarantined"), 1u)
    << "it tried again while quarantined: " << testing::PrintToString(log.snapshot());
  EXPECT_EQ(srv.stats().quarantine_refused, 0u);
}

TEST(ClientAgent, ListAgentsAnswersWithThePageOfConnectedNames) {
  test_server srv;
  event_log log;
  lambda_agent bob{"bob"};
  lambda_agent alice{"alice", &log};
  auto record = [&](const std::string& what, const expected<agent_list>& r) {
    if (!r) {
      log.add(what + ":" + to_string(static_cast<errc>(r.error().code.value())));
      return;
    }
    std::string s = what + ":";
    for (auto& n : r->names)
      s += n + ",";
    log.add(s + (r->truncated ? "more" : "end"));
  };
  alice.on_setup = [&] {
    // Not connected yet: fails (later, never inside the call).
    alice.list_agents().then([&](expected<agent_list> r) { record("early", r); });
  };
  alice.on_connected = [&](const session_info& s) {
    log.add(s.has_feature("list_agents") ? "feature" : "no-feature");
    alice.list_agents().then([&](expected<agent_list> r) { record("all", r); });
    list_options first;
    first.limit = 1;
    alice.list_agents("", first).then([&](expected<agent_list> r) {
      record("page1", r);
      if (!r)
        return;
      list_options next;
      next.after = r->names.back();
      next.limit = 1;
      alice.list_agents("", next).then([&](expected<agent_list> r2) { record("page2", r2); });
    });
    alice.list_agents("b").then([&](expected<agent_list> r) { record("b", r); });
  };
  runtime rt;
  event_log bob_log;
  bob.on_connected = [&](const session_info&) { bob_log.add("connect"); };
  rt.start(bob, local_options(srv.port()));
  ASSERT_TRUE(bob_log.wait_for("connect"));
  rt.start(alice, local_options(srv.port()));
  ASSERT_TRUE(log.wait_for("page2:bob,end")) << testing::PrintToString(log.snapshot());
  EXPECT_EQ(log.count("early:not_connected"), 1u);
  EXPECT_EQ(log.count("feature"), 1u);
  EXPECT_EQ(log.count("all:alice,bob,end"), 1u);
  EXPECT_EQ(log.count("page1:alice,more"), 1u);
  EXPECT_EQ(log.count("b:bob,end"), 1u);
  rt.stop_all();
  rt.wait_for(10s);
}
