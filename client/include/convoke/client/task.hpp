#pragma once

/// @file
/// `task<T>`: a handle for work an agent started — a timer (`after`), a
/// periodic task (`every`), a blocking job (`run_blocking`), a request
/// (`request`) or a child task (`spawn_task`). It is Convoke's future:
///
///     auto t = run_blocking([] { return load_model(); });
///     t.then([this](expected<model> m) {
///       if (m) use(*m);
///       else log().warn("load failed: {}", m.error().message());
///     });
///     ...
///     t.cancel(); // the continuation receives errc::cancelled, once
///
/// A task ends exactly once: succeeded (with a `T`), failed (the exception's
/// text, a timeout, a refused request...) or cancelled. Its continuation, if
/// one is given with `then()`, receives that outcome exactly once, on the
/// agent's actor (like every other agent callback), and never before the call
/// that started the task has returned. A failure nobody takes with `then()`
/// goes to `agent::on_error`, so it is never lost silently.
///
/// Handles are cheap to copy (copies refer to the same task) and may outlive
/// the task and the agent. Like the rest of `agent`, use them on the agent's
/// actor only (from hooks, handlers, tasks and continuations).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "convoke/client/error.hpp"
#include "convoke/common/error.hpp"

namespace convoke {

class agent;

using duration = std::chrono::milliseconds;

/// Identifies a task in logs (unique per agent; never 0 for a real task).
using task_id = uint64_t;

enum class task_status : uint8_t { running, succeeded, failed, cancelled };

/// How a task is started: its name (for logs and `on_error`) and its scope.
struct task_options {
  /// Shown in logs and in `error_info::where`: "task 'heartbeat'".
  std::string name;
  /// A task started inside `on_connect` belongs to that session: it is
  /// cancelled when the session ends, so that a reconnect (which calls
  /// `on_connect` again) does not run it twice. Set this to keep it until the
  /// agent stops instead. Tasks started anywhere else always live until the
  /// agent stops (or they end or are cancelled).
  bool outlive_session = false;

  task_options() = default;
  task_options(const char* n) : name(n) {}
  task_options(std::string n) : name(std::move(n)) {}
};

namespace detail {

class task_registry;

/// The shared state behind `task<T>` handles. Owned by the handles and, while
/// the task runs, by the agent's task registry.
struct task_cell_base : std::enable_shared_from_this<task_cell_base> {
  task_id id = 0;
  std::string name;
  task_status status = task_status::running;
  bool session_scoped = false;
  /// A delivery (or the check for an unhandled failure) is queued.
  bool delivery_queued = false;
  /// The continuation ran, or the outcome was reported to on_error.
  bool delivered = false;
  /// A cancelled child task is still cleaning up: its continuation waits
  /// for the child to be gone (like `await task` after `task.cancel()`).
  bool held = false;
  /// Points at the registry while it exists (the agent object's life); the
  /// registry nulls it when it goes, so a handle never reaches a dead one.
  std::shared_ptr<task_registry*> anchor;
  /// Stops the underlying work (sets a job's token, kills a child task);
  /// timers and requests simply find their task settled.
  std::function<void()> on_cancel;

  virtual ~task_cell_base() = default;
  virtual bool has_continuation() const noexcept = 0;
  virtual void settle_error(error e) = 0;
  /// Runs the continuation with the outcome; false if there is none.
  virtual bool run_continuation() = 0;
  virtual const error* failure() const noexcept = 0;

  /// "task 7" or "task 'heartbeat'".
  std::string label() const;

  task_registry* registry() const noexcept {
    return anchor ? *anchor : nullptr;
  }
};

template <class T>
struct task_cell final : task_cell_base {
  std::function<void(expected<T>)> continuation;
  std::optional<expected<T>> outcome;

  bool has_continuation() const noexcept override {
    return static_cast<bool>(continuation);
  }
  void settle_error(error e) override {
    status = e.code == errc::cancelled ? task_status::cancelled : task_status::failed;
    outcome.emplace(tl::unexpected<error>{std::move(e)});
  }
  bool run_continuation() override {
    if (!continuation || !outcome)
      return false;
    auto fn = std::move(continuation);
    continuation = nullptr;
    fn(std::move(*outcome));
    outcome.reset();
    return true;
  }
  const error* failure() const noexcept override {
    return outcome && !outcome->has_value() ? &outcome->error() : nullptr;
  }
};

struct child_core;
/// Runs `fn` on the child task after `delay`.
void child_after(child_core* core, duration delay, std::function<void()> fn);
/// Ends the child task: success if `failure` is empty.
void child_done(child_core* core, std::string failure);
/// Runs `fn` on the child when the task is cancelled, before it goes away.
void child_on_cancel(child_core* core, std::function<void()> fn);

/// Attaching a continuation may deliver an outcome that is already there.
/// False if it never could be (the agent has stopped).
bool continuation_attached(task_cell_base& cell);
bool cancel_cell(task_cell_base& cell);

} // namespace detail

/// A handle for running work; see the file comment.
template <class T>
class [[nodiscard]] task {
public:
  using value_type = T;

  /// A handle that refers to no task (`valid()` is false).
  task() = default;

  explicit task(std::shared_ptr<detail::task_cell<T>> cell) : cell_(std::move(cell)) {}

  /// True if this handle refers to a task.
  bool valid() const noexcept {
    return static_cast<bool>(cell_);
  }

  task_id id() const noexcept {
    return cell_ ? cell_->id : 0;
  }

  /// The task's status now: `running` until it ends.
  task_status status() const noexcept {
    return cell_ ? cell_->status : task_status::cancelled;
  }

  bool running() const noexcept {
    return status() == task_status::running;
  }

  /// Cancels the task if it is still running: a timer does not fire again, a
  /// request's reply is ignored, a blocking job's `cancel_token` reports
  /// cancelled, a child task is stopped. The continuation receives
  /// `errc::cancelled` (later, on the agent, exactly once). Returns false if
  /// the task had already ended.
  bool cancel() {
    return cell_ && detail::cancel_cell(*cell_);
  }

  /// Sets the continuation, called exactly once with the task's outcome
  /// (also if the task has already ended). A task has one continuation:
  /// setting a second one, one after a failure was already reported to
  /// `on_error`, or one after the agent has stopped throws
  /// `std::logic_error`.
  task& then(std::function<void(expected<T>)> fn) {
    if (!cell_)
      throw std::logic_error("convoke::task::then on an empty handle");
    if (cell_->continuation)
      throw std::logic_error("convoke::task::then: the task already has a continuation");
    if (cell_->delivered)
      throw std::logic_error("convoke::task::then: the task's outcome was already delivered");
    cell_->continuation = std::move(fn);
    if (!detail::continuation_attached(*cell_)) {
      cell_->continuation = nullptr;
      throw std::logic_error("convoke::task::then: the agent has stopped; nothing runs on it");
    }
    return *this;
  }

  /// @private The shared state (for the SDK).
  const std::shared_ptr<detail::task_cell<T>>& cell() const noexcept {
    return cell_;
  }

private:
  std::shared_ptr<detail::task_cell<T>> cell_;
};

/// What a child task (`agent::spawn_task`) works with. Use it on the child
/// only (from the body and from the functions given to `after`).
template <class T>
class task_context {
public:
  /// Runs `fn` on the child after `delay` (a delayed message to the child).
  /// An exception in `fn` fails the task.
  void after(duration delay, std::function<void()> fn) {
    if (!done_)
      detail::child_after(core_, delay, std::move(fn));
  }

  /// Ends the task with `value` (once; later calls are ignored).
  template <class U = T>
  requires(!std::is_void_v<T> && std::is_convertible_v<U&&, T>) void succeed(U&& value) {
    if (done_)
      return;
    done_ = true;
    value_.emplace(std::forward<U>(value));
    detail::child_done(core_, {});
  }

  /// Ends a `task<void>` successfully.
  void succeed() requires std::is_void_v<T> {
    if (done_)
      return;
    done_ = true;
    detail::child_done(core_, {});
  }

  /// Ends the task with a failure (`errc::failed` with `text`).
  void fail(std::string text) {
    if (done_)
      return;
    done_ = true;
    detail::child_done(core_, text.empty() ? std::string{"failed"} : std::move(text));
  }

  /// Runs `fn` on the child if the task is cancelled, before the child goes
  /// away and before the agent's continuation learns of it (asyncio: the
  /// task's `except CancelledError:` / `finally:` block).
  void on_cancel(std::function<void()> fn) {
    detail::child_on_cancel(core_, std::move(fn));
  }

  /// True once the task was ended by `succeed` or `fail`.
  bool done() const noexcept {
    return done_;
  }

private:
  friend class agent;
  detail::child_core* core_ = nullptr;
  std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value_;
  bool done_ = false;
};

} // namespace convoke
