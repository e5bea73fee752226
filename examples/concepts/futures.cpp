// Concept: a handle to running work that you can wait for or cancel
// (asyncio: `task = asyncio.ensure_future(coro)`, `task.add_done_callback`,
// `task.done()`, `task.cancel()`).
//
// `spawn_task<T>(body)` starts a child actor that does asynchronous work (its
// own timers, its own mailbox) and returns a `convoke::task<T>` at once: the
// work runs on its own while the agent goes on. `then(f)` is the done
// callback: `f` receives an `expected<T>` exactly once, on the agent, with
// the result, the failure, or `cancelled`. The agent keeps handling messages
// and heartbeats meanwhile; nothing blocks. (The same handle comes back from
// `after`, `every`, `run_blocking` and `request`.)
//
// Scenario: two squares computed by child tasks, combined when both are in
// (asyncio.gather); then a slow one, cancelled before it finishes.

#include "../common/harness.hpp"

using namespace std::chrono_literals;
using example::say;
using example::sayf;

namespace {

/// The body of a child task: "computes" x*x after `delay` (think: a call to
/// a model or a web service that answers later).
std::function<void(convoke::task_context<int>&)> square_later(int x, convoke::duration delay) {
  return [x, delay](convoke::task_context<int>& ctx) {
    ctx.after(delay, [&ctx, x] { ctx.succeed(x * x); });
  };
}

const char* status_name(convoke::task_status s) {
  switch (s) {
  case convoke::task_status::running:
    return "running";
  case convoke::task_status::succeeded:
    return "succeeded";
  case convoke::task_status::failed:
    return "failed";
  case convoke::task_status::cancelled:
    return "cancelled";
  }
  return "?";
}

} // namespace

class future_agent : public convoke::agent {
public:
  explicit future_agent(example::harness& h) : agent("futures"), h_(h) {}

  void on_connect(const convoke::session_info&) override {
    // ensure_future(): both computations now run on their own.
    seven_ = spawn_task<int>(square_later(7, 150ms), "square 7");
    eight_ = spawn_task<int>(square_later(8, 100ms), "square 8");
    sayf(name(), "spawned two child tasks; status: {} and {}", status_name(seven_.status()),
         status_name(eight_.status()));
    seven_.then([this](convoke::expected<int> r) { gathered("7*7", r); });
    eight_.then([this](convoke::expected<int> r) { gathered("8*8", r); });
    say(name(), "on_connect returned; the tasks are still running");
  }

private:
  // asyncio.gather: act once both results are in.
  void gathered(const char* what, const convoke::expected<int>& r) {
    if (!r) {
      sayf(name(), "{} failed: {}", what, r.error().message());
      h_.done(1);
      return;
    }
    sayf(name(), "then(): {} = {}", what, *r);
    sum_ += *r;
    if (++results_ < 2)
      return;
    sayf(name(), "gathered both results: sum {}", sum_);
    with_cancel();
  }

  void with_cancel() {
    slow_ = spawn_task<int>(square_later(9, 2s), "slow square");
    slow_.then([this](convoke::expected<int> r) {
      if (r) {
        sayf(name(), "unexpected: slow result {}", *r);
        h_.done(1);
        return;
      }
      sayf(name(), "the cancelled task's continuation got: {} ({})",
           convoke::to_string(static_cast<convoke::errc>(r.error().code.value())),
           r.error().message());
      sayf(name(), "status now: {}", status_name(slow_.status()));
      h_.done();
    });
    say(name(), "started a slow computation (2 s); cancelling it (task.cancel())");
    sayf(name(), "cancel() returned {}", slow_.cancel());
  }

  example::harness& h_;
  convoke::task<int> seven_;
  convoke::task<int> eight_;
  convoke::task<int> slow_;
  int results_ = 0;
  int sum_ = 0;
};

int main(int argc, char** argv) {
  example::harness h{"convoke-example-futures", "child tasks as futures: then(), gather, cancel",
                     argc, argv};
  if (h.exit_now())
    return h.exit_code();
  future_agent a{h};
  h.start(a);
  return h.run();
}
