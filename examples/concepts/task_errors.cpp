// Concept: an error in a task does not crash the loop; attach a handler
// (asyncio: exceptions stay inside their Task; loop.set_exception_handler).
//
// Any exception thrown by agent code (hooks, handlers, periodic tasks,
// blocking jobs) is caught by the SDK and passed to `on_error()`. The agent
// keeps serving, and a periodic task keeps its schedule. (In plain CAF an
// exception escaping a handler terminates the actor: the SDK catches it
// before that happens.)
//
// Scenario: a flaky periodic task throws on its second run; on_error reports
// it; the task runs again and a message is still handled afterwards.

#include <stdexcept>

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::sayf;

class flaky_agent : public convoke::agent {
public:
  explicit flaky_agent(example::harness& h) : agent("flaky"), h_(h) {}

  void setup() override {
    every(
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
