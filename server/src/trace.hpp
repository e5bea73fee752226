#pragma once

// Message trace: one record per relayed message (plus undeliverable and
// dropped messages), written by a dedicated thread so that formatting and
// file I/O never run on the relay's I/O thread. The queue is bounded: when
// it is full, records are dropped and counted instead of blocking the relay.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <spdlog/sinks/sink.h>

#include "convoke/common/error.hpp"
#include "convoke/common/logging.hpp"

namespace convoke::server {

/// Why messages were not written to a receiver (trace `dropped` records).
namespace drop_reason {
/// Output above flow.output-high-water (drop policy, or the backlog of a
/// consumer disconnected under the disconnect policy).
inline constexpr std::string_view slow_consumer = "slow_consumer";
/// Still queued when the shutdown deadline (timeouts.drain) was reached.
inline constexpr std::string_view shutdown = "shutdown";
/// Still queued when the receiver's connection closed or was given up.
inline constexpr std::string_view connection_closed = "connection_closed";
/// The sender's or the receiver's rights forbid it (`rejected` records).
inline constexpr std::string_view permission_denied = "permission_denied";
} // namespace drop_reason

struct trace_event {
  /// `rejected`: refused by policy (the sender's rights), never relayed;
  /// `reason` says why.
  enum class kind : uint8_t { relay, undeliverable, dropped, rejected };
  kind what = kind::relay;
  /// Relayed message id; for `dropped`, the first id of the dropped range.
  uint64_t message_id = 0;
  /// For `dropped`: the last id of the range.
  uint64_t last_message_id = 0;
  std::string sender;
  /// Direct recipient; empty for broadcasts.
  std::string recipient;
  std::string route;
  /// Number of agents the message was queued for (`relay`), or number of
  /// messages dropped (`dropped`).
  uint32_t count = 0;
  /// Up to 8 recipient names for broadcasts, comma-separated.
  std::string recipients;
  uint32_t payload_bytes = 0;
  int64_t sent_ns = 0;
  int64_t relayed_ns = 0;
  /// Raw trace id bytes (printed as hex).
  std::string trace_id;
  /// Payload excerpt (already capped), only when trace.payload-bytes > 0.
  std::string payload;
  bool payload_truncated = false;
  /// Reason code for undeliverable/dropped.
  std::string reason;
};

/// Formats one record as a human-readable line (without newline).
std::string format_trace_text(const trace_event& ev);

/// Formats one record as a JSON object (without newline).
std::string format_trace_json(const trace_event& ev);

class trace_writer {
public:
  struct options {
    /// File path, or "-" for standard output.
    std::string file = "-";
    logging::format fmt = logging::format::text;
    uint64_t max_file_bytes = 64ull << 20;
    uint32_t max_files = 5;
    uint32_t queue = 65536;
    /// Also bounds the queue by the bytes its records hold.
    uint64_t queue_bytes = 64ull << 20;
  };

  /// Opens the destination and starts the writer thread. The error is
  /// `errc::unwritable_file` ("cannot open trace file 'path': ...").
  static expected<std::unique_ptr<trace_writer>> open(const options& opts);

  ~trace_writer();

  trace_writer(const trace_writer&) = delete;
  trace_writer& operator=(const trace_writer&) = delete;

  /// Queues a record. Thread-safe; never blocks on I/O.
  void push(trace_event&& ev);

  /// Writes everything queued, then stops the thread. Idempotent.
  void stop();

  /// Asks the writer thread to open the file again by its path (SIGUSR1,
  /// after logrotate renamed it). It does so between two batches: the
  /// records queued before the request go to the old file, which is then
  /// flushed and closed, and the later ones to the new file; no record is
  /// cut or lost. The outcome is logged ("trace file reopened" or why not;
  /// on an error the old file stays in use). Nothing for standard output.
  void reopen();

  /// Reopens done so far (for waiting on one in tests).
  uint64_t reopened() const noexcept {
    return reopened_.load(std::memory_order_relaxed);
  }

  /// Asks the writer to write what is queued now and waits until it did, at
  /// most `limit` (false on timeout, e.g. a blocked output).
  bool flush(std::chrono::milliseconds limit);

  uint64_t written() const noexcept {
    return written_.load(std::memory_order_relaxed);
  }

  uint64_t dropped() const noexcept {
    return dropped_.load(std::memory_order_relaxed);
  }

  /// Interim, until the live tap (issue 10, trace_tap.hpp) feeds the web
  /// view: `fn` sees every batch on the writer thread, after it was
  /// written; null stops it (when set_observer returns, no call runs).
  using observer_fn = std::function<void(const std::vector<trace_event>&)>;
  void set_observer(observer_fn fn);

private:
  trace_writer(options opts, spdlog::sink_ptr sink);
  void run();
  void write_batch(const std::vector<trace_event>& batch);
  void reopen_now();
  void fail(const std::string& why, size_t lost, std::chrono::steady_clock::time_point now);

  options opts_;
  spdlog::sink_ptr sink_;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<trace_event> queue_;
  uint64_t queued_bytes_ = 0;
  bool stopping_ = false;
  bool reopen_requested_ = false;
  /// Incremented by flush() requests / by the writer after each pass.
  uint64_t flush_requested_ = 0;
  uint64_t passes_ = 0;
  std::condition_variable passed_;
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> reopened_{0};
  std::thread thread_;
  std::mutex observer_mtx_;
  observer_fn observer_;
  // Writer thread only: when the destination last failed / was last logged.
  std::chrono::steady_clock::time_point failed_at_{};
  std::chrono::steady_clock::time_point logged_at_{};
};

} // namespace convoke::server
