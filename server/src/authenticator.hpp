#pragma once

// Token checks off the relay thread, and the failed-login throttle; free
// of CAF.
//
// An argon2id verification takes tens of milliseconds and 19 MiB, so it
// never runs on the multiplexer thread that relays every message: sessions
// hand it to the authenticator's worker thread and get the answer as a
// callback (which sends the session an actor message). One worker bounds
// the memory; a bounded queue bounds the backlog (beyond it: server_busy).
// A successful check is remembered as a keyed BLAKE2b digest of the token
// (per-process random key), so an agent that reconnects, or a fleet that
// reconnects after a restart of the network, costs one argon2id per
// identity, not one per connection.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "credentials.hpp"

namespace convoke::server {

class authenticator {
public:
  enum class outcome : uint8_t {
    /// The token matches the identity's hash.
    accepted,
    /// No such identity, or the token does not match (callers do not tell
    /// the peer which).
    refused,
  };

  using callback = std::function<void(outcome, std::shared_ptr<const identity>)>;

  explicit authenticator(std::shared_ptr<const credential_store> store, size_t max_queued = 1024);
  ~authenticator();

  authenticator(const authenticator&) = delete;
  authenticator& operator=(const authenticator&) = delete;

  /// Checks `token` for the identity `name`. `done` runs once, on the
  /// worker thread or (for a remembered token, an unknown identity or a
  /// token of the wrong length) inside this call; checks still queued when
  /// the authenticator is destroyed are dropped. False, without calling
  /// `done`, if the queue is full.
  /// `queued` (if given) tells whether the check added an argon2id to the
  /// worker's queue, rather than being answered from memory or at once, or
  /// joining a queued check of the same identity and token (a fleet of
  /// agents logging in together costs one argon2id).
  bool submit(std::string name, std::string token, callback done, bool* queued = nullptr);

  /// Installs a new set of identities (a reloaded file) for later checks;
  /// remembered tokens are forgotten.
  void replace(std::shared_ptr<const credential_store> store);

  std::shared_ptr<const credential_store> store() const;

  /// Checks done with argon2id (not answered from memory), for tests and
  /// counters.
  uint64_t hashed() const noexcept {
    return hashed_.load(std::memory_order_relaxed);
  }

private:
  using digest = std::array<unsigned char, 32>;
  struct job {
    std::shared_ptr<const identity> id;
    std::string token;
    /// Every login waiting for this check (the same identity and token).
    std::vector<callback> done;
    uint64_t generation;
    digest key;
  };

  void run();
  digest keyed_digest(std::string_view token) const;

  std::array<unsigned char, 32> key_{};
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::shared_ptr<const credential_store> store_;
  std::deque<job> queue_;
  size_t max_queued_;
  bool stopping_ = false;
  /// Incremented by replace(): results of older checks are not remembered.
  uint64_t generation_ = 0;
  std::unordered_map<std::string, digest> verified_;
  std::atomic<uint64_t> hashed_{0};
  std::thread worker_;
};

/// Failed logins per peer address (IP, never the port). After `limit`
/// failures within `window`, further attempts from that address are
/// refused without checking anything until the window ends. Memory is
/// bounded: at most `max_addresses` are tracked; when full, expired
/// entries are swept, then the oldest is forgotten. Not thread-safe (the
/// sessions use it from the multiplexer thread only).
class login_throttle {
public:
  using clock = std::chrono::steady_clock;

  login_throttle(uint32_t limit, std::chrono::milliseconds window, size_t max_addresses = 65536)
    : limit_(limit), window_(window), max_addresses_(max_addresses) {
    // nop
  }

  /// New limits (a reload); the failures counted so far stay.
  void set_limits(uint32_t limit, std::chrono::milliseconds window) noexcept {
    limit_ = limit;
    window_ = window;
  }

  /// Zero if `address` may try now, else how long it must wait.
  std::chrono::milliseconds blocked_for(const std::string& address, clock::time_point now);

  /// Records a failed login from `address`.
  void failed(const std::string& address, clock::time_point now);

  /// Takes back one failure of `address` (a login counted as failed while
  /// its check was pending, then accepted).
  void forgive(const std::string& address);

  size_t tracked() const noexcept {
    return entries_.size();
  }

private:
  struct entry {
    clock::time_point window_start;
    uint32_t failures = 0;
  };

  uint32_t limit_;
  std::chrono::milliseconds window_;
  size_t max_addresses_;
  std::unordered_map<std::string, entry> entries_;
};

} // namespace convoke::server
