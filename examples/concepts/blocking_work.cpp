// Concept: blocking work off the loop
// (asyncio: `await loop.run_in_executor(None, blocking_fn, arg)`).
//
// `run_blocking(work)` runs `work` on a detached actor, i.e. on its own
// thread, and returns a task handle; its continuation (`then`) receives the
// result as a message on the agent. The
// agent's actor never blocks: it keeps answering the server's heartbeats and
// handling messages while the job runs. (Calling the blocking function
// directly in a handler would stall this agent; in the server, it would
// stall every connection.)
//
// Scenario: the server sends heartbeats every 100 ms and drops agents silent
// for 500 ms (in-process server). A 2 s job runs while a peer sends a message
// every 100 ms: messages and heartbeats keep flowing, the session survives.

#include <thread>

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

/// A legacy, blocking function (e.g. a synchronous HTTP call or a CPU-heavy
/// computation).
long slow_fibonacci(int n) {
  std::this_thread::sleep_for(2s);
  long a = 0, b = 1;
  for (int i = 0; i < n; ++i)
    b = a + std::exchange(a, b);
  return a;
}

class worker : public convoke::agent {
public:
  explicit worker(example::harness& h) : agent("worker"), h_(h) {}

  void on_connect(const convoke::session_info& s) override {
    sayf(name(), "connected; the server sends heartbeats every {} ms, idle timeout {} ms",
         s.heartbeat_interval.count(), s.idle_timeout.count());
    heartbeats_before_ = stats().heartbeats;
    say(name(), "starting a 2 s blocking job with run_blocking()");
    job_ = run_blocking([] { return slow_fibonacci(50); }, "fibonacci");
    job_.then([this](convoke::expected<long> result) {
      auto hb = stats().heartbeats - heartbeats_before_;
      if (!result) {
        sayf(name(), "job failed: {}", result.error().message());
        h_.done(1);
        return;
      }
      sayf(name(), "job done: fib(50) = {}", *result);
      sayf(name(), "during the job: {} messages handled, {} server heartbeats answered",
           during_job_, hb);
      h_.done();
    });
    say(name(), "on_connect returned; the job runs on its own thread");
  }

  void on_message(const convoke::message& m) override {
    ++during_job_;
    if (during_job_ % 5 == 1)
      sayf(name(), "message '{}' handled while the job runs", m.payload);
  }

  void on_disconnect(const convoke::disconnect_info& d) override {
    sayf(name(), "DISCONNECTED: {} ({})", d.code, d.reason);
  }

private:
  example::harness& h_;
  convoke::task<long> job_;
  int during_job_ = 0;
  uint64_t heartbeats_before_ = 0;
};

class ticker : public convoke::agent {
public:
  ticker() : agent("ticker") {}
  void on_connect(const convoke::session_info&) override {
    ticks_ = every(100ms, [this] { send_to("worker", "tick " + std::to_string(++n_)); });
  }

private:
  convoke::task<void> ticks_;
  int n_ = 0;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-blocking-work",
                     "run_blocking(): blocking work on a detached actor", argc, argv,
                     [](convoke::server::server_config& cfg) {
                       cfg.heartbeat_interval = 100ms;
                       cfg.idle_timeout = 500ms;
                     }};
  if (h.exit_now())
    return h.exit_code();
  worker w{h};
  ticker t;
  h.start(w);
  h.start(t);
  return h.run();
}
