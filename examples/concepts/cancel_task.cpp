// Concept: cancelling a running task and waiting for its cleanup
// (asyncio: `task.cancel()`, then `await task` raising CancelledError, with
// the task's `except CancelledError:`/`finally:` doing the cleanup).
//
// The task is a child task (`spawn_task`) doing work in steps, one timer per
// step. `task.cancel()` stops it: the child runs the cleanup it registered
// with `ctx.on_cancel` (its `except CancelledError` block) and goes away, and
// only then does the task's continuation receive `cancelled`, like `await
// task` raising CancelledError after the cleanup. Cleanup always comes first.
//
// Scenario: the task reports each step to the agent; at step 3 the agent
// cancels it (reacting to an event, not after a guessed delay).

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

class canceller : public convoke::agent {
public:
  explicit canceller(example::harness& h) : agent("canceller"), h_(h) {}

  void on_connect(const convoke::session_info&) override {
    task_
      = spawn_task<void>([this](convoke::task_context<void>& ctx) { stepping(ctx, 1); }, "stepper");
    say("task", "started; holding a resource (think: a lock or a temp file)");
    task_.then([this](convoke::expected<void> r) {
      if (r) {
        say(name(), "unexpected: the task finished");
        h_.done(1);
        return;
      }
      sayf(name(),
           "continuation: the task ended with '{}', after its cleanup (like `await task` "
           "raising CancelledError)",
           convoke::to_string(static_cast<convoke::errc>(r.error().code.value())));
      h_.done();
    });
  }

private:
  // Runs on the child. It must not touch agent state: it tells the agent
  // about each step with post(), which is safe from any thread.
  void stepping(convoke::task_context<void>& ctx, int n) {
    if (n == 1)
      ctx.on_cancel([] { say("task", "cancelled: cleanup ran, resource released"); });
    sayf("task", "step {}", n);
    post([this, n] { on_step(n); });
    ctx.after(100ms, [this, &ctx, n] { stepping(ctx, n + 1); });
  }

  // Runs on the agent.
  void on_step(int n) {
    if (n == 3 && task_.running()) {
      say(name(), "step 3 reached: task.cancel()");
      task_.cancel();
    }
  }

  example::harness& h_;
  convoke::task<void> task_;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-cancel-task",
                     "cancel a child task; its cleanup runs before the cancellation is observed",
                     argc, argv};
  if (h.exit_now())
    return h.exit_code();
  canceller a{h};
  h.start(a);
  return h.run();
}
