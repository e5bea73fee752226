#pragma once

// Rate limits and quarantine by principal, and the per-address connection
// count. CAF-free; tests/unit/rate_limits_test.cpp drives it with a fake
// clock.
//
// A *principal* is who the limits apply to, across all of its connections:
// a string computed in one place (principal_of() in session.cpp; for now
// "addr:<peer IP>", later the authenticated identity). Each principal has
// two token buckets shared by all of its sessions: messages per second and
// bytes per second, each with a burst (the bucket's size). An envelope takes
// 1 message and its size in bytes, or neither if either bucket lacks it.
//
// Breaches and quarantine: a refused envelope is a *breach*, but at most one
// per `breach_spacing` (1 s) is counted, so a sender that keeps flooding
// earns one breach a second however fast it sends, and one burst over the
// limit earns one. `quarantine_after` breaches within `quarantine_window` of
// the first of them (a fixed window, restarted by the first breach after it
// ended) quarantine the principal for `quarantine_for`: its sessions are
// closed and its Hellos refused until then, whatever address:port it uses.
//
// Memory: a principal with sessions is always kept. One without sessions
// ("idle") is removed by a sweep (at most every `sweep_interval`, from
// admit/release) once it is *stale*: not quarantined, no breach window
// open, and both buckets full again, i.e. exactly the state a new entry
// would have, so forgetting it changes nothing. Beyond `max_idle` idle
// principals the least recently active idle one is evicted even if not
// stale (counted in evicted(); it may lose a quarantine then).
//
// Threading: the registry lives in server_context and is used only by
// brokers (sessions, listener), which all run on CAF's one multiplexer
// thread, so it needs no lock.

#include <chrono>
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "convoke/server/config.hpp"

namespace convoke::server {

/// The limits of one principal. The server-wide defaults come from [limits]
/// (from_config); the credentials file may override them per identity.
struct rate_limit_settings {
  /// 0: unlimited.
  double messages_per_second = 0;
  /// The bucket's size (what may be sent at once after a quiet spell).
  double messages_burst = 0;
  /// 0: unlimited.
  double bytes_per_second = 0;
  double bytes_burst = 0;
  /// Breaches within `quarantine_window` that quarantine; 0: never.
  uint32_t quarantine_after = 0;
  std::chrono::milliseconds quarantine_window{60000};
  std::chrono::milliseconds quarantine_for{300000};

  bool limited() const noexcept {
    return messages_per_second > 0 || bytes_per_second > 0;
  }

  /// The [limits] keys with the burst rule applied: a burst of 0 means one
  /// second's worth, and for bytes at least limits.max-frame-bytes (a
  /// message of the largest size must be able to pass).
  static rate_limit_settings from_config(const server_config& cfg);
};

/// A token bucket: holds up to `burst` tokens, refilled at `rate` a second.
/// A rate of 0 means unlimited (every take succeeds).
class token_bucket {
public:
  using clock = std::chrono::steady_clock;

  /// Sets rate and size; the bucket starts (or is capped) full at `now`.
  void configure(double rate, double burst, clock::time_point now) noexcept;

  bool unlimited() const noexcept {
    return rate_ <= 0;
  }

  /// Adds what accrued since the last call (up to the burst).
  void refill(clock::time_point now) noexcept;

  /// (Refills add up elapsed time in floating point: a token that is due
  /// must not be missed by a rounding error, hence the tolerance.)
  bool has(double n) const noexcept {
    return unlimited() || tokens_ >= n - tolerance(n);
  }

  void take(double n) noexcept {
    if (!unlimited())
      tokens_ -= n;
  }

  /// How long until `n` tokens are there (after refill(now)).
  std::chrono::nanoseconds wait_for(double n) const noexcept;

  bool full() const noexcept {
    return unlimited() || tokens_ >= burst_ - tolerance(burst_);
  }

  double tokens() const noexcept {
    return tokens_;
  }

private:
  static double tolerance(double n) noexcept {
    return 1e-9 * (n > 1 ? n : 1);
  }

  double rate_ = 0;
  double burst_ = 0;
  double tokens_ = 0;
  clock::time_point last_{};
};

/// Which limit refused an envelope.
enum class limit_kind : uint8_t { none, messages, bytes };

/// The answer to rate_limits::take.
struct rate_decision {
  enum class verdict : uint8_t {
    /// Within the limits: relay it (the tokens are taken).
    pass,
    /// Over a limit: do not relay it; retry after `retry_after`.
    limited,
    /// The principal is quarantined (maybe by this very envelope, see
    /// `quarantine_started`): do not relay; close the session.
    quarantined,
  };
  verdict what = verdict::pass;
  limit_kind limit = limit_kind::none;
  /// limited: when enough tokens will be there (at least 1 ms);
  /// quarantined: how long the quarantine still lasts.
  std::chrono::milliseconds retry_after{0};
  /// This refusal was counted as a breach (at most one per breach_spacing).
  bool breach = false;
  /// This refusal started the quarantine: close the principal's sessions.
  bool quarantine_started = false;
};

class rate_limits {
public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// At most one breach is counted per this interval.
  static constexpr std::chrono::seconds breach_spacing{1};
  /// Stale idle principals are swept at most this often.
  static constexpr std::chrono::seconds sweep_interval{10};

  struct principal {
    std::string name;
    rate_limit_settings settings;
    token_bucket messages;
    token_bucket bytes;
    /// The sessions admitted under this principal and not yet released.
    std::vector<uint64_t> sessions;
    /// Breaches in the window that began at `window_start`.
    uint32_t breaches = 0;
    time_point window_start{};
    time_point last_breach{};
    /// In quarantine while now < this.
    std::optional<time_point> quarantined_until;
    /// Position in the idle list (when it has no sessions).
    std::list<principal*>::iterator idle_pos;
    bool idle = false;
  };

  /// What admit() answers: the principal, or how long it stays quarantined.
  struct admission {
    principal* entry = nullptr; // null: refused, quarantined
    std::chrono::milliseconds quarantine_left{0};
  };

  explicit rate_limits(size_t max_idle = 65536) : max_idle_(max_idle) {}

  rate_limits(const rate_limits&) = delete;
  rate_limits& operator=(const rate_limits&) = delete;

  void set_max_idle(size_t n) noexcept {
    max_idle_ = n;
  }

  /// A session of `name` starts (its Hello): refused while the principal is
  /// quarantined; otherwise it joins the principal (created if new) and
  /// `settings` become the principal's (the buckets keep their tokens, up to
  /// a new burst). The entry stays valid until release() of its last session.
  admission admit(std::string_view name, const rate_limit_settings& settings, uint64_t session,
                  time_point now);

  /// The session ended. The principal becomes idle when it was its last.
  void release(principal& p, uint64_t session, time_point now);

  /// One envelope of `bytes` from `p` at `now` (see rate_decision).
  rate_decision take(principal& p, uint64_t bytes, time_point now);

  /// How long `name` stays quarantined, if it is.
  std::optional<std::chrono::milliseconds> quarantine_left(std::string_view name,
                                                           time_point now) const;

  /// Removes stale idle principals (see the file comment). Called by admit
  /// and release at most every sweep_interval; tests call it directly.
  void sweep(time_point now);

  size_t size() const noexcept {
    return entries_.size();
  }

  size_t idle() const noexcept {
    return idle_.size();
  }

  /// Idle principals evicted over max_idle before they were stale.
  uint64_t evicted() const noexcept {
    return evicted_;
  }

private:
  void maybe_sweep(time_point now);
  bool stale(principal& p, time_point now) const;
  void erase(principal& p);

  std::unordered_map<std::string, principal> entries_;
  /// Idle principals, least recently active first.
  std::list<principal*> idle_;
  size_t max_idle_;
  uint64_t evicted_ = 0;
  std::optional<time_point> last_sweep_;
};

/// Counts open connections per peer address (limits.max-connections-per-
/// address). Entries go when their count reaches 0, so memory follows the
/// open connections. Used by the listener only (multiplexer thread).
class address_counts {
public:
  /// Counts a new connection from `address` if fewer than `limit` are open
  /// (0: no limit). False: over the limit, not counted.
  bool admit(const std::string& address, uint32_t limit);

  /// A counted connection from `address` ended.
  void release(const std::string& address);

  uint32_t open(const std::string& address) const;

  size_t addresses() const noexcept {
    return counts_.size();
  }

private:
  std::unordered_map<std::string, uint32_t> counts_;
};

/// The peer's IP address of a connected socket, without the port
/// ("127.0.0.1", "2001:db8::1"; IPv4-mapped IPv6 addresses as IPv4), or
/// "unknown" if getpeername fails.
std::string peer_address(int fd);

} // namespace convoke::server
