// Concept: cancelling a running task and waiting for its cleanup
// (asyncio: `task.cancel()`, then `await task` raising CancelledError, with
// the task's `except CancelledError:`/`finally:` doing the cleanup).
//
// The task is a child actor doing work in steps (a delayed self-send per
// step). Cancelling it means sending it an exit message. Its exit handler is
// the `except CancelledError` block: it cleans up, then quits. The agent
// monitors the child, so it gets a down message when the child is gone, like
// `await task` returning. Cleanup always comes before the down message.
//
// Scenario: run the task for a few steps, cancel it, observe cleanup and exit.

#include "../common/harness.hpp"
#include "convoke/client/caf_interop.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

using step_atom = caf::atom_constant<caf::atom("step")>;

/// The cancellable task.
caf::behavior stepping_task(caf::event_based_actor* self) {
  say("task", "started; holding a resource (think: a lock or a temp file)");
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    // except CancelledError: clean up, then re-raise (quit).
    sayf("task", "exit message ({}): cleanup ran, resource released", caf::to_string(msg.reason));
    self->quit(msg.reason);
  });
  self->send(self, step_atom::value, 1);
  return {[self](step_atom, int n) {
    sayf("task", "step {}", n);
    self->delayed_send(self, 100ms, step_atom::value, n + 1);
  }};
}

class canceller : public convoke::agent {
public:
  explicit canceller(example::harness& h) : agent("canceller"), h_(h) {}

  void on_connect(const convoke::session_info&) override {
    auto self = convoke::interop::self(*this);
    task_ = self->spawn(stepping_task);
    self->monitor(task_);
    convoke::interop::on_down(*this, [this](const caf::down_msg& dm) {
      sayf(name(), "down message: the task is gone (reason {}), like `await task` returning",
           caf::to_string(dm.reason));
      h_.done();
    });
    after(350ms, [this] {
      say(name(), "task.cancel(): sending the task an exit message");
      convoke::interop::self(*this)->send_exit(task_, caf::exit_reason::user_shutdown);
    });
  }

private:
  example::harness& h_;
  caf::actor task_;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-cancel-task",
                     "cancel a task actor with an exit message; cleanup runs; observe the "
                     "down message",
                     argc, argv};
  if (h.exit_now())
    return h.exit_code();
  canceller a{h};
  h.start(a);
  return h.run();
}
