#pragma once

// Per-session rate limit for Notices and trace records about individual
// messages (unknown or invalid recipients). CAF-free, unit-tested.
//
// A token bucket: `burst` reports at once, then `per_second`. What is over
// the limit is not reported one by one but counted, and summarised once per
// window (the caller arms a timer when `suppress()` says so): a flood of
// mistakes costs a bounded number of Notices and trace lines, and nothing
// is hidden.

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace convoke::server {

class notice_limiter {
public:
  using clock = std::chrono::steady_clock;

  /// Reports allowed per second, and at once.
  static constexpr double per_second = 20;
  static constexpr double burst = 20;
  /// How long suppressed reports are collected before the summary.
  static constexpr std::chrono::seconds window{1};

  /// True if a report may be sent now (it takes a token).
  bool allow(clock::time_point now) {
    refill(now);
    if (tokens_ < 1)
      return false;
    tokens_ -= 1;
    return true;
  }

  /// Counts a report that was not sent. True if this starts a new summary
  /// window: the caller then arranges `take()` after `window`.
  bool suppress(uint64_t message_id) {
    if (suppressed_.count++ == 0) {
      suppressed_.first_id = message_id;
      suppressed_.last_id = message_id;
      return true;
    }
    suppressed_.first_id = std::min(suppressed_.first_id, message_id);
    suppressed_.last_id = std::max(suppressed_.last_id, message_id);
    return false;
  }

  struct summary {
    uint64_t count = 0;
    uint64_t first_id = 0;
    uint64_t last_id = 0;
  };

  /// True if nothing is suppressed now (no summary window is open).
  bool take_would_be_empty() const noexcept {
    return suppressed_.count == 0;
  }

  /// What was suppressed since the last call, and forgets it.
  summary take() {
    auto out = suppressed_;
    suppressed_ = {};
    return out;
  }

private:
  void refill(clock::time_point now) {
    if (last_ == clock::time_point{}) {
      last_ = now;
      return;
    }
    auto secs = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = std::min(burst, tokens_ + secs * per_second);
  }

  double tokens_ = burst;
  clock::time_point last_{};
  summary suppressed_;
};

} // namespace convoke::server
