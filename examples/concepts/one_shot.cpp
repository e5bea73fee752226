// Concept: one-off scripts block until their job completes
// (asyncio: `loop.run_until_complete(main())`, never mixed with run_client).
//
// `convoke::blocking_client` is a blocking actor (`caf::scoped_actor`) with
// its own actor system: each call blocks the calling thread until it is done,
// so a script reads top to bottom. Agents never use it; they must not block.
//
// Scenario: an "echo" agent runs as usual (an actor in a runtime); the script
// part of main() connects with a blocking client, sends one request, waits
// for the reply, prints it and exits.

#include <future>

#include "../common/harness.hpp"
#include "convoke/client/blocking_client.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

class echo : public convoke::agent {
public:
  explicit echo(std::promise<void>& ready) : agent("echo"), ready_(ready) {}
  void on_connect(const convoke::session_info&) override {
    say(name(), "echo agent is up (an actor, not the script)");
    ready_.set_value();
  }
  void on_message(const convoke::message& m) override {
    if (m.is_request()) {
      sayf(name(), "answering '{}' from {}", m.payload, m.sender);
      reply(m, "echo: " + m.payload);
    }
  }

private:
  std::promise<void>& ready_;
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
  ready.get_future().wait();

  // ---- the one-off script: plain sequential code ------------------------------
  convoke::blocking_client script{h.client(), "one-shot-script"};
  std::string why;
  if (auto err = script.connect(&why)) {
    sayf("script", "cannot connect: {}", why);
    h.done(1);
    return h.run();
  }
  sayf("script", "connected as {} (blocking call returned)", script.session().agent_name);
  say("script", "request 'ping' to echo; blocking until the reply arrives");
  convoke::request_error err;
  auto reply = script.request("echo", "ping", 2s, &err);
  if (reply)
    sayf("script", "got the reply: '{}' (message {})", reply->payload, reply->id);
  else
    sayf("script", "no reply: {}", err.text);
  script.close();
  say("script", "closed; the script is done");
  // -----------------------------------------------------------------------------
  h.done(reply ? 0 : 1);
  return h.run();
}
