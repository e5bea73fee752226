// Concept: an error in a task does not crash the loop; attach a handler
// (asyncio: exceptions stay inside their Task; loop.set_exception_handler).
//
// An exception stays with the work that threw it:
//  - a task with a continuation (`then`) hands it there, as a failed
//    `expected` with the exception's text (asyncio: `await task` re-raises);
//  - anything else (hooks, handlers, periodic tasks, tasks nobody waits for)
//    goes to `on_error()`, the agent-wide handler
//    (loop.set_exception_handler).
// Either way the agent keeps serving, and a periodic task keeps its
// schedule. (In plain CAF an exception escaping a handler terminates the
// actor: the SDK catches it before that happens.)
//
// Scenario: a blocking job fails and its continuation gets the error; a
// flaky periodic task throws on its second run and on_error reports it; the
// task runs again and a message is still handled afterwards.

#include <stdexcept>

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::sayf;

class flaky_agent : public convoke::agent {
public:
  explicit flaky_agent(example::harness& h) : agent("flaky"), h_(h) {}

  void setup() override {
    parse_ = run_blocking(
      []() -> int { throw std::runtime_error("config.toml: line 3: bad value"); }, "parse config");
    parse_.then([this](convoke::expected<int> r) {
      if (!r)
        sayf(name(), "continuation: {} failed: {}", "parse config", r.error().message());
    });
    poll_ = every(
      100ms,
      [this] {
        ++runs_;
        if (runs_ == 2)
          throw std::runtime_error("sensor unavailable");
        sayf(name(), "task run {} ok", runs_);
        if (runs_ == 4)
          send_to(name(), "still serving messages?"); // to ourselves
      },
      "poll sensor");
  }

  // The exception handler: report, count, carry on.
  void on_error(const convoke::error_info& err) override {
    sayf(name(), "on_error: {} failed: {} (the agent keeps running)", err.where, err.what);
  }

  void on_message(const convoke::message& m) override {
    sayf(name(), "handled message '{}' after the failure", m.payload);
    h_.done();
  }

private:
  example::harness& h_;
  convoke::task<int> parse_;
  convoke::task<void> poll_;
  int runs_ = 0;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-task-errors",
                     "a failing task is reported to on_error() and the agent keeps serving", argc,
                     argv};
  if (h.exit_now())
    return h.exit_code();
  flaky_agent a{h};
  h.start(a);
  return h.run();
}
