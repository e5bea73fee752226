// Concept: a handle to running work that you can await or cancel
// (asyncio: `task = asyncio.ensure_future(coro)`; `await task`; `task.cancel()`).
//
// In actor terms the running work is a child actor, and the handle is the
// request sent to it. `request(...).then(f)` is like adding a done-callback:
// the agent keeps handling other messages meanwhile. `request(...).await(f)`
// is like `await task`: the agent handles nothing else until the result
// arrives. Cancelling means stopping the child; the pending request then
// fails, and its error handler sees why (like awaiting a cancelled task).
// This example uses the opt-in CAF interop header to reach the agent's actor.
// The plain SDK offers the same pattern as agent::request()/cancel().
//
// Scenario: spawn a child, get 7*7 with then(), 8*8 with await(), then start
// a slow computation and cancel it.

#include "../common/harness.hpp"
#include "convoke/client/caf_interop.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

using square_atom = caf::atom_constant<caf::atom("square")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;

/// A child actor that answers right away.
caf::behavior squarer(caf::event_based_actor*) {
  return {[](square_atom, int x) { return x * x; }};
}

/// A child that answers after two seconds (unless stopped first).
struct slow_state {
  caf::response_promise promise;
  int x = 0;
};
caf::behavior slow_squarer(caf::stateful_actor<slow_state>* self) {
  // Cancellation: fail the pending request with the reason before quitting,
  // so that whoever awaits it learns at once (asyncio: CancelledError).
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    if (self->state.promise.pending())
      self->state.promise.deliver(caf::make_error(caf::exit_reason::user_shutdown));
    self->quit(msg.reason);
  });
  return {
    [self](square_atom, int x) {
      self->state.promise = self->make_response_promise();
      self->state.x = x;
      self->delayed_send(self, 2s, finish_atom::value);
      return self->state.promise;
    },
    [self](finish_atom) { self->state.promise.deliver(self->state.x * self->state.x); },
  };
}

class future_agent : public convoke::agent {
public:
  explicit future_agent(example::harness& h) : agent("futures"), h_(h) {}

  void on_connect(const convoke::session_info&) override {
    auto self = convoke::interop::self(*this);
    child_ = self->spawn(squarer); // ensure_future(): the work now runs on its own
    say(name(), "spawned a child actor; requesting 7*7 with then()");
    self->request(child_, 1s, square_atom::value, 7)
      .then(
        [this](int r) {
          sayf(name(), "then(): result {}", r);
          with_await();
        },
        [this](caf::error& e) { sayf(name(), "then(): failed: {}", caf::to_string(e)); });
    say(name(), "on_connect returned; the request is still in flight");
  }

  void teardown() override {
    auto self = convoke::interop::self(*this);
    for (auto& c : {child_, slow_})
      if (c)
        self->send_exit(c, caf::exit_reason::user_shutdown);
  }

private:
  void with_await() {
    auto self = convoke::interop::self(*this);
    say(name(), "requesting 8*8 with await(): nothing else runs until it arrives");
    self->request(child_, 1s, square_atom::value, 8)
      .await(
        [this](int r) {
          sayf(name(), "await(): result {}", r);
          with_cancel();
        },
        [this](caf::error& e) { sayf(name(), "await(): failed: {}", caf::to_string(e)); });
  }

  void with_cancel() {
    auto self = convoke::interop::self(*this);
    slow_ = self->spawn(slow_squarer);
    say(name(), "started a slow computation (2 s)");
    self->request(slow_, 5s, square_atom::value, 9)
      .then([this](int r) { sayf(name(), "unexpected: slow result {}", r); },
            [this](caf::error& e) {
              sayf(name(), "the cancelled request failed with: {}", caf::to_string(e));
              h_.done();
            });
    after(200ms, [this] {
      say(name(), "cancelling it: exit message to the child (task.cancel())");
      convoke::interop::self(*this)->send_exit(slow_, caf::exit_reason::user_shutdown);
    });
  }

  example::harness& h_;
  caf::actor child_;
  caf::actor slow_;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-futures", "child actors as futures: then(), await(), cancel",
                     argc, argv};
  if (h.exit_now())
    return h.exit_code();
  future_agent a{h};
  h.start(a);
  return h.run();
}
