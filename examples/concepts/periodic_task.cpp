// Concept: fire-and-forget periodic work started in setup()
// (asyncio: `self.loop.create_task(self._heartbeat())`).
//
// A task in Convoke is a delayed message the agent's actor sends to itself:
// `every(interval, fn)` schedules `fn`, and after each run schedules the next.
// Between two runs the actor handles whatever else arrives, so the task runs
// concurrently with message handlers without threads or locks.
//
// Scenario: a 200 ms heartbeat task runs while a chatty peer sends a message
// every 150 ms; the output shows both interleaving. After 5 heartbeats the
// scenario ends.

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::sayf;

class heartbeat_agent : public convoke::agent {
public:
  explicit heartbeat_agent(example::harness& h) : agent("listener"), h_(h) {}

  void setup() override {
    // create_task(self._heartbeat()): a delayed self-send loop.
    beat_ = every(
      200ms,
      [this] {
        sayf(name(), "heartbeat {}", ++beats_);
        if (beats_ == 5)
          h_.done();
      },
      "heartbeat");
  }

  void on_message(const convoke::message& m) override {
    sayf(name(), "message '{}' from {}", m.payload, m.sender);
  }

private:
  example::harness& h_;
  convoke::task<void> beat_;
  int beats_ = 0;
};

class chatter : public convoke::agent {
public:
  chatter() : agent("chatter") {}
  void on_connect(const convoke::session_info&) override {
    chat_ = every(150ms, [this] { send_to("listener", "chat " + std::to_string(++n_)); });
  }

private:
  convoke::task<void> chat_;
  int n_ = 0;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-periodic-task",
                     "every() in setup(): periodic work next to message handlers", argc, argv};
  if (h.exit_now())
    return h.exit_code();
  heartbeat_agent listener{h};
  chatter talker;
  h.start(listener);
  h.start(talker);
  return h.run();
}
