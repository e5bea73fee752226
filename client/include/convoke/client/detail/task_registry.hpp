#pragma once

/// @file
/// @private SDK internals that the agent's templates need.

// The agent's task registry (CAF-free): one id space for timers, periodic
// tasks, blocking jobs, requests and child tasks, and the rules by which a
// task's outcome reaches its continuation exactly once:
//
//  - A task settles once (succeeded, failed or cancelled); later outcomes are
//    ignored.
//  - Settled by a completion (a timer fired, a job finished, a reply came):
//    the continuation runs right away if there is one; otherwise the outcome
//    is kept and a check is queued on the agent. If a continuation has been
//    attached when the check runs, it gets the outcome; a failure nobody
//    took goes to `unhandled` (agent::on_error).
//  - Settled by the caller's own action (cancel(), an immediate failure while
//    the task is started): always queued, so a continuation never runs inside
//    the call that started or cancelled its task.
//  - At the agent's stop, every task still running ends (`end_all`), and the
//    outcomes are delivered at once, before the actor goes away.
//
// The registry never calls agent code directly: `hooks` say how to run code
// later on the agent (`defer`), how to run agent code with its exceptions
// reported (`guarded`) and where unhandled failures go. Without hooks (the
// agent is not running yet) deferred work waits until `attach`.

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "convoke/client/task.hpp"

namespace convoke::detail {

class task_registry {
public:
  struct hooks {
    /// Runs `fn` later on the agent's actor.
    std::function<void(std::function<void()>)> defer;
    /// Runs agent code, reporting an exception as an error at `where`.
    std::function<void(const std::string& where, const std::function<void()>& fn)> guarded;
    /// A task failed and nobody set a continuation.
    std::function<void(const std::string& where, const error& e)> unhandled;
  };

  task_registry() = default;
  ~task_registry();
  task_registry(const task_registry&) = delete;
  task_registry& operator=(const task_registry&) = delete;

  /// The agent runs: deferred work goes to `h.defer` from now on (and what
  /// was queued before goes there now).
  void attach(hooks h);

  /// The agent's actor is gone: nothing can run on it any more.
  void detach();

  /// Opens a running task. After `close()` the task is returned already
  /// cancelled. `in_on_connect` makes it session-scoped unless
  /// `opts.outlive_session`.
  template <class T>
  std::shared_ptr<task_cell<T>> open(const task_options& opts, bool in_on_connect) {
    auto cell = std::make_shared<task_cell<T>>();
    init(*cell, opts, in_on_connect);
    if (closed_)
      cell->settle_error(error{make_error_code(errc::cancelled), "the agent has stopped"});
    else
      live_.emplace(cell->id, cell);
    return cell;
  }

  /// The live task with this id, or null.
  task_cell_base* find(task_id id) const;

  /// Settles `cell` with success; its outcome (for non-void T) must already
  /// be in the cell. Runs the continuation now if there is one.
  template <class T, class... Value>
  void succeed(task_cell<T>& cell, Value&&... value) {
    if (cell.status != task_status::running)
      return;
    cell.outcome.emplace(std::forward<Value>(value)...);
    cell.status = task_status::succeeded;
    completed(cell);
  }

  /// Settles `cell` with a failure, from a completion (runs the continuation
  /// now if there is one).
  void fail(task_cell_base& cell, error e);

  /// Settles `cell` with a failure from the caller's own action (delivery
  /// is queued).
  void fail_later(task_cell_base& cell, error e);

  /// Cancels a running task: `on_cancel` runs, delivery is queued. False if
  /// it had ended.
  bool cancel(task_cell_base& cell, std::string why = "cancelled");

  /// Holds the delivery of a cancelled task until `release` (a child task
  /// cleaning up); `key` identifies it for `release_held`.
  void hold(task_cell_base& cell, uint64_t key) {
    cell.held = true;
    held_.emplace(key, cell.shared_from_this());
  }
  /// The held task with this key is done: deliver it. False if none.
  bool release_held(uint64_t key) {
    auto i = held_.find(key);
    if (i == held_.end())
      return false;
    auto c = std::move(i->second);
    held_.erase(i);
    release(*c);
    return true;
  }

  /// A continuation was attached to `cell`: deliver an outcome it missed.
  void attached(task_cell_base& cell);

  /// The session ended: cancels the session-scoped tasks.
  void end_session();

  /// The agent stops: every running task ends with `e`, delivered now
  /// (cancelled child tasks stay held until they are gone, or `flush`);
  /// tasks opened later are born cancelled.
  void end_all(const error& e);

  /// The agent's actor is gone without a stop (it died): every task still
  /// running ends cancelled without a delivery (nothing can run), and no
  /// cell keeps a hook into the dead actor.
  void abandon();

  /// Cancelled child tasks still cleaning up.
  size_t held() const noexcept {
    return held_.size();
  }

  /// Outcomes can still be delivered (the agent runs, or will).
  bool can_deliver() const noexcept {
    return attached_ || !closed_;
  }

  /// Delivers what is still queued, now (the agent is about to go away).
  void flush();

  size_t running() const noexcept {
    return live_.size();
  }

private:
  void init(task_cell_base& cell, const task_options& opts, bool in_on_connect);
  void release(task_cell_base& cell);
  /// Removes a settling cell from the live ones; the result owns it.
  std::shared_ptr<task_cell_base> take_live(task_cell_base& cell);
  void completed(task_cell_base& cell);
  void queue(task_cell_base& cell);
  void deliver(task_cell_base& cell);
  void defer(std::function<void()> fn);

  std::unordered_map<task_id, std::shared_ptr<task_cell_base>> live_;
  std::vector<std::function<void()>> waiting_;                 // deferred before attach()
  std::unordered_set<std::shared_ptr<task_cell_base>> queued_; // delivery queued
  std::unordered_map<uint64_t, std::shared_ptr<task_cell_base>> held_;
  hooks hooks_;
  bool attached_ = false;
  bool closed_ = false;
  task_id next_id_ = 1;
  std::shared_ptr<task_registry*> anchor_ = std::make_shared<task_registry*>(this);
};

} // namespace convoke::detail
