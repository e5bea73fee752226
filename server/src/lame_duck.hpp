#pragma once

// Lame-duck mode's schedule (CAF-free; the router performs it).
//
// The server stops accepting at `start`, waits `grace` (load balancers see
// /readyz fail), then closes its agents spread evenly over the rest of
// `duration`: with N agents open, the k-th close (k = 1..N) is due at the
// middle of the k-th of N equal slots of [start + grace, start + duration].
// The plan keeps no list: every call says how many agents are still open
// (not yet asked to close), and the next close is planned from the last
// one over what is left, so agents that arrive (handshakes that were under
// way) or leave on their own move the remaining closes, never past the
// end. At the end, every agent still open is due.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace convoke::server {

class lame_duck_plan {
public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;
  using milliseconds = std::chrono::milliseconds;

  /// The router checks at least this often (agents may register or leave
  /// between planned closes) and at most this often (a group of closes due
  /// within it is done at once).
  static constexpr milliseconds max_tick{250};
  static constexpr milliseconds min_tick{5};
  /// The smallest reconnect hint, and the largest jitter window added.
  static constexpr milliseconds min_hint{250};
  static constexpr milliseconds max_jitter{5000};

  lame_duck_plan(time_point start, milliseconds grace, milliseconds duration)
    : begin_(start + std::min(grace, duration)), end_(start + duration) {}

  /// When the first close may happen (start + grace).
  time_point closing_begins() const noexcept {
    return begin_;
  }
  /// When every agent is due (start + duration).
  time_point ends() const noexcept {
    return end_;
  }

  /// How many of the `open` agents to close at `now` (the caller closes
  /// that many and says so by passing fewer next time).
  size_t due(time_point now, size_t open) {
    if (now < begin_ || open == 0)
      return 0;
    if (now >= end_) {
      last_ = now;
      return open;
    }
    size_t n = 0;
    while (n < open) {
      auto t = next_close(open - n);
      if (t > now)
        break;
      last_ = t;
      ++n;
    }
    return n;
  }

  /// When to call `due` again, with `open` agents left.
  time_point next_check(time_point now, size_t open) const {
    time_point t;
    if (now < begin_)
      t = begin_;
    else if (open == 0 || now >= end_)
      t = now + max_tick;
    else
      t = next_close(open);
    return std::clamp(t, now + min_tick, now + max_tick);
  }

  /// The reconnect hint for one agent, from a random number: at least
  /// min_hint plus a jitter up to a tenth of the closing window (at most
  /// max_jitter), so that agents closed together do not come back together.
  milliseconds reconnect_hint(uint64_t random) const {
    auto window = std::chrono::duration_cast<milliseconds>(end_ - begin_) / 10;
    window = std::clamp(window, milliseconds{1}, max_jitter);
    return min_hint
           + milliseconds{static_cast<int64_t>(random % static_cast<uint64_t>(window.count() + 1))};
  }

private:
  /// The next close with `open` agents left: the middle of the first of
  /// `open` equal slots from the start of the closing window, or the end of
  /// the first of `open` + 1/2 slots after the last close (which keeps the
  /// slots of an unchanged plan where they were).
  time_point next_close(size_t open) const {
    if (!last_) {
      auto slot = (end_ - begin_) / static_cast<int64_t>(2 * open);
      return begin_ + slot;
    }
    auto left = std::chrono::duration<double, std::nano>(end_ - *last_);
    auto step = left / (static_cast<double>(open) + 0.5);
    return *last_ + std::chrono::duration_cast<clock::duration>(step);
  }

  time_point begin_;
  time_point end_;
  std::optional<time_point> last_;
};

} // namespace convoke::server
