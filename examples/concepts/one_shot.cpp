// Concept: one-off scripts block until their job completes
// (asyncio: `loop.run_until_complete(main())`, never mixed with run_client).
//
// `run_until_complete` is exactly what asyncio's does: start a runtime (the
// event loop) with one agent, start one task once it is connected, block the
// calling thread until that task's outcome is in, or a timeout, and stop.
// The script reads top to bottom; the agent inside is a normal actor.
// (`convoke::blocking_client` offers the same for longer scripts: connect,
// then one blocking call per step.) Agents never block like this.
//
// Scenario: an "echo" agent runs as usual; the script part of main() sends
// one request, waits for the reply, prints it and exits.

#include <future>

#include "../common/harness.hpp"
#include "convoke/client/runtime.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

class echo : public convoke::agent {
public:
  explicit echo(std::promise<void>& ready) : agent("echo"), ready_(ready) {}
  void on_connect(const convoke::session_info&) override {
    say(name(), "echo agent is up (an actor, not the script)");
    if (!up_) {
      up_ = true;
      ready_.set_value();
    }
  }
  void on_message(const convoke::message& m) override {
    if (m.is_request()) {
      sayf(name(), "answering '{}' from {}", m.payload, m.sender);
      reply(m, "echo: " + m.payload);
    }
  }

private:
  std::promise<void>& ready_;
  bool up_ = false;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-one-shot",
                     "a blocking one-shot script: connect, request, await the reply, exit", argc,
                     argv};
  if (h.exit_now())
    return h.exit_code();
  std::promise<void> ready;
  echo e{ready};
  h.start(e);
  // The script starts once echo is there (an event, not a guessed delay).
  if (ready.get_future().wait_for(10s) != std::future_status::ready) {
    say("script", "echo did not come up");
    h.done(1);
    return h.run();
  }

  // ---- the one-off script: plain sequential code ------------------------------
  say("script", "run_until_complete: connect, request 'ping' to echo, wait for the reply");
  auto reply = convoke::run_until_complete<convoke::message>(
    h.client(), "one-shot-script",
    [](convoke::agent& a) {
      sayf("script", "connected as {}; sending the request", a.name());
      return a.request("echo", "ping", 2s);
    },
    5s);
  if (reply)
    sayf("script", "got the reply: '{}' (message {})", reply->payload, reply->id);
  else
    sayf("script", "no reply: {}", reply.error().message());
  say("script", "the runtime has stopped; the script is done");
  // -----------------------------------------------------------------------------
  h.done(reply ? 0 : 1);
  return h.run();
}
