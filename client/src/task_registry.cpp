// The task registry: see task_registry.hpp for the delivery rules.

#include "convoke/client/detail/task_registry.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace convoke {

namespace detail {

std::string task_cell_base::label() const {
  return name.empty() ? fmt::format("task {}", id) : fmt::format("task '{}'", name);
}

bool continuation_attached(task_cell_base& cell) {
  auto* reg = cell.registry();
  if (cell.status == task_status::running)
    return true; // delivered when it ends
  if (reg == nullptr || !reg->can_deliver())
    return false;
  reg->attached(cell);
  return true;
}

bool cancel_cell(task_cell_base& cell) {
  auto* reg = cell.registry();
  if (cell.status != task_status::running || reg == nullptr)
    return false;
  return reg->cancel(cell);
}

task_registry::~task_registry() {
  // Handles may outlive the agent object: their tasks end with it, and no
  // handle can reach the registry any more.
  abandon();
  *anchor_ = nullptr;
}

void task_registry::abandon() {
  closed_ = true;
  detach();
  auto live = std::move(live_);
  live_.clear();
  for (auto& [id, cell] : live) {
    cell->on_cancel = nullptr;
    if (cell->status == task_status::running)
      cell->settle_error(error{make_error_code(errc::cancelled), "the agent is gone"});
  }
  for (auto& [key, cell] : held_)
    cell->on_cancel = nullptr;
  held_.clear();
  queued_.clear();
}

void task_registry::attach(hooks h) {
  hooks_ = std::move(h);
  attached_ = true;
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& fn : waiting)
    hooks_.defer(std::move(fn));
}

void task_registry::detach() {
  attached_ = false;
  hooks_ = {};
  waiting_.clear();
}

void task_registry::init(task_cell_base& cell, const task_options& opts, bool in_on_connect) {
  cell.id = next_id_++;
  cell.name = opts.name;
  cell.session_scoped = in_on_connect && !opts.outlive_session;
  cell.anchor = anchor_;
}

std::shared_ptr<task_cell_base> task_registry::take_live(task_cell_base& cell) {
  std::shared_ptr<task_cell_base> owned;
  if (auto i = live_.find(cell.id); i != live_.end()) {
    owned = std::move(i->second);
    live_.erase(i);
  }
  return owned;
}

task_cell_base* task_registry::find(task_id id) const {
  auto i = live_.find(id);
  return i == live_.end() ? nullptr : i->second.get();
}

void task_registry::fail(task_cell_base& cell, error e) {
  if (cell.status != task_status::running)
    return;
  cell.settle_error(std::move(e));
  completed(cell);
}

void task_registry::fail_later(task_cell_base& cell, error e) {
  if (cell.status != task_status::running)
    return;
  auto hold = take_live(cell); // keeps the cell alive while it settles
  cell.settle_error(std::move(e));
  cell.on_cancel = nullptr;
  queue(cell);
}

bool task_registry::cancel(task_cell_base& cell, std::string why) {
  if (cell.status != task_status::running)
    return false;
  // Keep the cell alive while its hook runs (the hook may drop the last
  // reference the agent held).
  auto hold = take_live(cell); // keeps the cell alive while it settles
  cell.settle_error(error{make_error_code(errc::cancelled), std::move(why)});
  if (cell.on_cancel) {
    auto fn = std::move(cell.on_cancel);
    cell.on_cancel = nullptr;
    fn();
  }
  queue(cell);
  return true;
}

void task_registry::attached(task_cell_base& cell) {
  // A settled task whose outcome is waiting: deliver it later (never inside
  // the caller's then()).
  if (cell.status != task_status::running && !cell.delivered && !cell.delivery_queued)
    queue(cell);
}

void task_registry::end_session() {
  std::vector<std::shared_ptr<task_cell_base>> scoped;
  for (auto& [id, cell] : live_)
    if (cell->session_scoped)
      scoped.push_back(cell);
  for (auto& cell : scoped)
    cancel(*cell, "the session ended");
}

void task_registry::end_all(const error& e) {
  closed_ = true;
  auto live = std::move(live_);
  live_.clear();
  for (auto& [id, cell] : live) {
    if (cell->status != task_status::running)
      continue;
    cell->settle_error(e);
    if (cell->on_cancel) {
      auto fn = std::move(cell->on_cancel);
      cell->on_cancel = nullptr;
      fn();
    }
    deliver(*cell); // held (a child task cleaning up): delivered on release
  }
}

void task_registry::completed(task_cell_base& cell) {
  auto hold = take_live(cell); // keeps the cell alive while it settles
  cell.on_cancel = nullptr;
  if (cell.has_continuation())
    deliver(cell);
  else
    queue(cell);
}

void task_registry::release(task_cell_base& cell) {
  if (!cell.held)
    return;
  cell.held = false;
  queue(cell);
}

void task_registry::queue(task_cell_base& cell) {
  if (cell.delivery_queued || cell.delivered || cell.held)
    return;
  cell.delivery_queued = true;
  // The queued function owns the cell: its handles may be gone by then.
  auto c = cell.shared_from_this();
  queued_.insert(c);
  defer([this, c] {
    c->delivery_queued = false;
    queued_.erase(c);
    deliver(*c);
  });
}

void task_registry::flush() {
  for (auto& [id, c] : held_)
    if (c->held) {
      c->held = false;
      deliver(*c);
    }
  held_.clear();
  while (!queued_.empty()) {
    auto queued = std::move(queued_);
    queued_ = {};
    for (auto& c : queued) {
      c->delivery_queued = false;
      deliver(*c);
    }
  }
}

void task_registry::deliver(task_cell_base& cell) {
  if (cell.delivered || cell.held)
    return;
  if (cell.has_continuation()) {
    cell.delivered = true;
    auto where = cell.label() + " continuation";
    if (hooks_.guarded)
      hooks_.guarded(where, [&cell] { cell.run_continuation(); });
    else
      cell.run_continuation();
    return;
  }
  // A success or a cancellation is kept for a continuation that may still
  // come; a failure nobody waits for is reported now, never lost.
  if (cell.status != task_status::failed)
    return;
  cell.delivered = true;
  if (auto* e = cell.failure(); e != nullptr && hooks_.unhandled)
    hooks_.unhandled(cell.label(), *e);
}

void task_registry::defer(std::function<void()> fn) {
  if (attached_)
    hooks_.defer(std::move(fn));
  else if (!closed_) // after the stop, nothing runs on the agent any more
    waiting_.push_back(std::move(fn));
}

} // namespace detail

} // namespace convoke
