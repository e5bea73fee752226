// Concept: the event loop is managed for you (asyncio: run_client/run_server).
//
// In Summoner, run_client() creates and runs the asyncio loop, and shutdown
// happens on SIGINT/SIGTERM. In Convoke, `convoke::run_client(agent, opts)`
// starts the actor system (the "loop"), runs the agent's actor, and turns
// SIGINT/SIGTERM into a clean stop: teardown() runs, the agent says Goodbye,
// and run_client returns the exit code. Agent code never touches the
// scheduler. (The server side is `convoke-server`, which drains on signals.)
//
// Scenario: the agent connects, then sends SIGTERM to its own process, as
// `kill` or Ctrl-C would; the run ends through teardown() with exit code 0.

#include <csignal>
#include <unistd.h>

#include "../common/harness.hpp"

using example::say;
using example::sayf;

class loop_demo : public convoke::agent {
public:
  loop_demo() : agent("loop-demo") {}

  void setup() override {
    say(name(), "setup(): the actor started; run_client owns the loop");
  }

  void on_connect(const convoke::session_info& s) override {
    sayf(name(), "on_connect(): session {} with server '{}'", s.session_id, s.server_name);
    say(name(), "sending SIGTERM to this process (like `kill` or Ctrl-C)");
    ::kill(::getpid(), SIGTERM);
  }

  void teardown() override {
    say(name(), "teardown(): the signal ended the run; closing resources here");
  }
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-event-loop",
                     "run_client manages the loop; SIGTERM ends in teardown()", argc, argv};
  if (h.exit_now())
    return h.exit_code();
  loop_demo agent;
  // The whole program: one call, like Summoner's agent.run().
  auto rc = convoke::run_client(agent, h.client());
  sayf("main", "run_client returned {}", rc);
  return rc;
}
