#pragma once

// What the admin listener shows about connected agents (/connz, /routez)
// and the relay's histograms (/metrics), readable from any thread while the
// relay runs. CAF-free.
//
// Writers are the brokers, all on CAF's one multiplexer thread, so every
// counter has a single writer: it is bumped with a relaxed load and store
// (no locked instruction on the relay path) and read with a relaxed load by
// the admin threads, which may see a value a few messages old but never a
// torn one. The registry's mutex is taken when an agent is admitted or
// leaves and when the admin lists agents, never per message; an agent's
// route list has its own small mutex, taken by the router on a subscription
// change and by the admin when it reads the list.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace convoke::server {

/// A counter with one writing thread and any number of readers.
class single_writer_counter {
public:
  void add(uint64_t n = 1) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void set(uint64_t n) noexcept {
    value_.store(n, std::memory_order_relaxed);
  }
  uint64_t get() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

private:
  std::atomic<uint64_t> value_{0};
};

/// A histogram with fixed upper bounds (Prometheus `le`), one writer.
/// Bounds are in the unit observed (bytes, nanoseconds); the last bucket is
/// +Inf.
class histogram {
public:
  static constexpr size_t max_bounds = 24;

  explicit histogram(std::vector<uint64_t> bounds);

  void observe(uint64_t value) noexcept {
    size_t i = 0;
    while (i < n_bounds_ && value > bounds_[i])
      ++i;
    counts_[i].add();
    sum_.add(value);
  }

  struct snapshot {
    std::vector<uint64_t> bounds;
    /// Per bucket (not cumulative); one more than bounds (the +Inf bucket).
    std::vector<uint64_t> counts;
    uint64_t sum = 0;
    uint64_t count = 0;
  };
  snapshot read() const;

private:
  std::array<uint64_t, max_bounds> bounds_{};
  size_t n_bounds_ = 0;
  std::array<single_writer_counter, max_bounds + 1> counts_;
  single_writer_counter sum_;
};

/// One agent past Hello. The strings are set before the registry publishes
/// it and never change; the counters and the routes are live.
struct session_info {
  uint64_t session = 0;
  std::string name;
  std::string address;
  std::string identity;
  std::string role;
  std::string sdk;
  std::string sdk_version;
  bool tls = false;
  std::chrono::system_clock::time_point connected_since;

  /// Envelopes and bytes (frames as sent) accepted from the agent.
  single_writer_counter in_msgs;
  single_writer_counter in_bytes;
  /// Messages and bytes handed to its connection.
  single_writer_counter out_msgs;
  single_writer_counter out_bytes;
  /// Messages for it that were never written (slow consumer, closed).
  single_writer_counter dropped;
  /// Output waiting for it (in the server's buffers, not yet sent).
  single_writer_counter pending_bytes;
  /// steady_clock nanoseconds of its last input.
  std::atomic<int64_t> last_activity_ns{0};

  void touch(std::chrono::steady_clock::time_point now) noexcept {
    last_activity_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }

  void set_routes(std::vector<std::string> routes);
  std::vector<std::string> routes() const;

private:
  mutable std::mutex routes_mutex_;
  std::vector<std::string> routes_;
};

using session_info_ptr = std::shared_ptr<session_info>;

/// Connected agents by session id, and the relay's histograms.
class session_registry {
public:
  session_registry();

  void add(session_info_ptr info);
  void remove(uint64_t session);
  /// The agents now, in no particular order.
  std::vector<session_info_ptr> list() const;
  size_t size() const;

  /// Sizes of relayed envelopes (bytes of the frame as the sender wrote it).
  histogram message_bytes;
  /// From the sender's message being read to its delivery being handed to
  /// the receiver's connection, in nanoseconds (one sample per delivery
  /// write: a batch of messages to one receiver is one sample).
  histogram relay_latency_ns;

private:
  mutable std::mutex mutex_;
  std::unordered_map<uint64_t, session_info_ptr> sessions_;
};

} // namespace convoke::server
