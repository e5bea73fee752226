// Runs every concept example (examples/concepts) as a real process and checks
// that it shows its concept: the order of events, not just the exit code.

#include <gtest/gtest.h>

#include <csignal>
#include <regex>
#include <sstream>
#include <thread>

#include "process.hpp"
#include "wait.hpp"

using namespace convoke::test;
using namespace std::chrono_literals;

namespace {

struct run_result {
  int code = -1;
  std::vector<std::string> lines;
  std::string err;

  /// Index of the first line containing `text`, or npos.
  size_t find(const std::string& text, size_t from = 0) const {
    for (size_t i = from; i < lines.size(); ++i)
      if (lines[i].find(text) != std::string::npos)
        return i;
    return std::string::npos;
  }

  size_t count(const std::string& text) const {
    size_t n = 0;
    for (auto& l : lines)
      n += l.find(text) != std::string::npos;
    return n;
  }

  /// Seconds since start printed on line `i` ("  3 [ 0.123s] ...").
  double seconds(size_t i) const {
    std::smatch m;
    static const std::regex re{R"(\[\s*([0-9.]+)s\])"};
    if (i < lines.size() && std::regex_search(lines[i], m, re))
      return std::stod(m[1]);
    return -1;
  }

  std::string dump() const {
    std::string out;
    for (auto& l : lines)
      out += l + "\n";
    return out + err;
  }
};

run_result run_example(const std::string& name, std::vector<std::string> args = {}) {
  std::vector<std::string> argv{binary("convoke-example-" + name)};
  argv.insert(argv.end(), args.begin(), args.end());
  process p{argv};
  run_result r;
  auto code = p.wait(60s);
  r.code = code ? *code : -1;
  std::istringstream in{p.out()};
  for (std::string line; std::getline(in, line);)
    r.lines.push_back(line);
  r.err = p.err();
  return r;
}

constexpr auto npos = std::string::npos;

/// Expects the texts to appear on lines in this order.
void expect_in_order(const run_result& r, const std::vector<std::string>& texts) {
  size_t pos = 0;
  for (auto& t : texts) {
    auto i = r.find(t, pos);
    ASSERT_NE(i, npos) << "missing (in order): '" << t << "'\n" << r.dump();
    pos = i + 1;
  }
}

} // namespace

TEST(Examples, EventLoopSignalEndsInTeardown) {
  auto r = run_example("event-loop");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(
    r, {"setup()", "on_connect()", "sending SIGTERM", "teardown()", "run_client returned 0"});
}

TEST(Examples, PeriodicTaskRunsConcurrentlyWithHandlers) {
  auto r = run_example("periodic-task");
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(r.count("heartbeat "), 5u) << r.dump();
  auto first = r.find("heartbeat 1");
  auto last = r.find("heartbeat 5");
  ASSERT_NE(last, npos);
  // Messages are handled between heartbeats, not before or after all of them.
  auto msg = r.find("message 'chat", first);
  EXPECT_LT(msg, last) << r.dump();
  EXPECT_GE(r.find("heartbeat 3"), r.find("message 'chat", r.find("heartbeat 2"))) << r.dump();
}

TEST(Examples, TaskErrorGoesToHandlerAndTheAgentKeepsServing) {
  auto r = run_example("task-errors");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(r, {"task run 1 ok", "on_error: task 'poll sensor' failed: sensor unavailable",
                      "task run 3 ok", "handled message"});
  EXPECT_EQ(r.find("task run 2 ok"), npos);
  // A failure with a continuation goes there, not to on_error.
  EXPECT_NE(r.find("continuation: parse config failed: config.toml: line 3: bad value"), npos)
    << r.dump();
  EXPECT_EQ(r.find("on_error: task 'parse config'"), npos) << r.dump();
}

TEST(Examples, FuturesThenGatherAndCancel) {
  auto r = run_example("futures");
  ASSERT_EQ(r.code, 0) << r.dump();
  // then() is asynchronous: the handler returned before the results came.
  expect_in_order(r, {"status: running and running", "on_connect returned",
                      "gathered both results: sum 113", "cancelling it", "cancel() returned true",
                      "continuation got: cancelled", "status now: cancelled"});
  EXPECT_NE(r.find("then(): 7*7 = 49"), npos) << r.dump();
  EXPECT_NE(r.find("then(): 8*8 = 64"), npos) << r.dump();
  EXPECT_EQ(r.find("unexpected"), npos) << r.dump();
  // The cancellation reached the continuation at once, not after the 2 s
  // computation.
  auto cancel = r.find("cancelling it");
  auto got = r.find("continuation got");
  EXPECT_LT(r.seconds(got) - r.seconds(cancel), 1.0) << r.dump();
}

TEST(Examples, BlockingWorkDoesNotStallTheAgent) {
  auto r = run_example("blocking-work");
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_EQ(r.find("DISCONNECTED"), npos) << r.dump();
  auto done = r.find("during the job:");
  ASSERT_NE(done, npos) << r.dump();
  std::smatch m;
  std::regex re{R"((\d+) messages handled, (\d+) server heartbeats answered)"};
  ASSERT_TRUE(std::regex_search(r.lines[done], m, re)) << r.lines[done];
  EXPECT_GE(std::stoi(m[1]), 10) << "messages waited for the job";
  EXPECT_GE(std::stoi(m[2]), 10) << "heartbeats waited for the job";
  EXPECT_GE(r.seconds(r.find("job done")) - r.seconds(r.find("starting a 2 s")), 1.9);
}

TEST(Examples, OneShotScriptGetsItsReply) {
  auto r = run_example("one-shot");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(r, {"echo agent is up", "run_until_complete", "connected as one-shot-script",
                      "answering 'ping' from one-shot-script", "got the reply: 'echo: ping'",
                      "the runtime has stopped; the script is done"});
}

TEST(Examples, CancelledTaskCleansUpBeforeItsEndIsObserved) {
  auto r = run_example("cancel-task");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(r, {"step 1", "step 3", "task.cancel()", "cleanup ran",
                      "continuation: the task ended with 'cancelled', after its cleanup"});
  auto cleanup = r.find("cleanup ran");
  EXPECT_EQ(r.find("step ", cleanup), npos) << "the task kept running after its cleanup";
}

TEST(Examples, TeardownClosesResourcesAndLosesNothing) {
  auto r = run_example("teardown");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(r, {"setup(): opened", "journaled 'entry 5'",
                      "teardown(): cancelled the flush task, closed the journal (5 entries)",
                      "the journal holds 5 lines"});
}

TEST(Examples, QueueWorkerUsesSetupConnectAndTeardown) {
  auto r = run_example("queue-worker");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(r, {"setup(): queue created", "on_connect(): session", "submitted 8 jobs"});
  // Two jobs run at a time, so results may come in any order; each comes once.
  for (int i = 1; i <= 8; ++i) {
    auto line = "result " + std::to_string(i) + "^2=" + std::to_string(i * i);
    auto at = r.find(line);
    EXPECT_NE(at, npos) << line << "\n" << r.dump();
    EXPECT_EQ(r.find(line, at + 1), npos) << line << " twice";
  }
  EXPECT_NE(r.find("teardown(): 0 running jobs cancelled, 0 jobs left, 8 done"), npos) << r.dump();
}

TEST(Examples, StateMachineHandlesMessagesPerState) {
  auto r = run_example("state-machine");
  ASSERT_EQ(r.code, 0) << r.dump();
  expect_in_order(r, {"state: (start) -> idle", "state: idle -> awaiting-ack",
                      "[awaiting-ack] 'DATA too-early' is not expected here: ignored",
                      "state: awaiting-ack -> established", "[established] received 'DATA pong'"});
  EXPECT_EQ(r.find("[established] received 'DATA too-early'"), npos);
}

TEST(Examples, RunAgainstAnExternalServer) {
  temp_dir dir;
  process server{{binary("convoke-server"), "--listen.port", "0", "--listen.port-file",
                  dir.file("port"), "--trace.enabled", "false"}};
  std::string port;
  ASSERT_TRUE(eventually([&] { return !(port = read_file(dir.file("port"))).empty(); }))
    << server.err();
  port.erase(port.find_last_not_of("\n") + 1);
  auto r = run_example("queue-worker", {"--server", "127.0.0.1:" + port});
  ASSERT_EQ(r.code, 0) << r.dump();
  EXPECT_NE(r.find("using convoke-server at 127.0.0.1:" + port), npos) << r.dump();
  EXPECT_NE(r.find("result 8^2=64"), npos);
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(10s), 0);
}

TEST(Examples, HelpDescribesTheExample) {
  auto r = run_example("blocking-work", {"--help"});
  EXPECT_EQ(r.code, 0);
  std::string all;
  for (auto& l : r.lines)
    all += l;
  EXPECT_NE(all.find("run_blocking()"), npos) << all;
  EXPECT_NE(all.find("--server"), npos) << all;
}
