#pragma once

// Message traces. The relay thread records each event as a compact binary
// record (trace_record.hpp) into a ring of its own (trace_ring.hpp): a copy,
// no lock, no allocation, no formatting, no system call. The trace writer's
// thread drains the rings, numbers the events, formats them (text or JSON
// lines) into its own size-rotated file or standard output, and hands them
// to the live tap. When a ring is full the record is lost, counted, and the
// writer reports the loss as a `gap` event in the trace.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "convoke/common/error.hpp"
#include "convoke/common/logging.hpp"
#include "convoke/common/trace_event.hpp"
#include "trace_record.hpp"

namespace convoke::server {

class trace_ring;

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
/// The trace buffer (trace.buffer) was full: records lost (`gap`).
inline constexpr std::string_view trace_buffer_full = "trace_buffer_full";
/// Summoner receivers: the relay line would exceed summoner.max-line-bytes.
inline constexpr std::string_view too_large = "too_large";
} // namespace drop_reason

/// Receives every event the writer decodes (the live tap). Called on the
/// writer's thread only.
class trace_consumer {
public:
  virtual ~trace_consumer() = default;
  virtual void publish(const trace::event& ev) = 0;
  /// After each pass over the rings.
  virtual void end_pass() = 0;
};

class trace_writer {
public:
  struct options {
    /// Write a trace file (trace.enabled); without it, events are recorded
    /// only while someone observes them.
    bool to_file = true;
    /// File path, or "-" for standard output.
    std::string file = "-";
    logging::format fmt = logging::format::text;
    uint64_t max_file_bytes = 64ull << 20;
    uint32_t max_files = 5;
    /// Bytes of records each recording thread may be ahead of the writer.
    uint64_t buffer_bytes = 16ull << 20;
    /// This server boot's id (16 hex digits), in every event.
    std::string boot;
  };

  /// Opens the destination and starts the writer thread. The error is
  /// `errc::unwritable_file` ("cannot open trace file 'path': ...").
  static expected<std::unique_ptr<trace_writer>> open(const options& opts);

  ~trace_writer();

  trace_writer(const trace_writer&) = delete;
  trace_writer& operator=(const trace_writer&) = delete;

  /// Whether events are recorded now: a trace file, or an observer. Cheap
  /// (two relaxed loads); check it before gathering an event's fields.
  bool recording() const noexcept {
    return to_file_ || observed_.load(std::memory_order_relaxed);
  }

  /// Records an event. Any thread; never blocks, never allocates after the
  /// thread's first record. The ring full: the record is lost and counted,
  /// and the result is false (a caller that assumes the record was seen, as
  /// the router does for audience definitions, must not).
  bool record(const record_fields& f) noexcept;

  /// Sets the consumer of decoded events (the live tap) and whether it
  /// wants events now (observed). The consumer must outlive the writer's
  /// thread (stop()).
  void set_consumer(trace_consumer* consumer);
  void set_observed(bool observed) noexcept {
    observed_.store(observed, std::memory_order_relaxed);
  }

  /// Payload bytes the file quotes at most (trace.payload-bytes; events
  /// may carry more for observers that asked). Any thread (SIGHUP reload).
  void set_file_payload_bytes(uint64_t n) noexcept {
    file_payload_bytes_.store(n, std::memory_order_relaxed);
  }

  /// Writes everything recorded, then stops the thread. Idempotent.
  void stop();

  /// Asks the writer thread to open the file again by its path (SIGUSR1,
  /// after logrotate renamed it). It does so between two passes: the
  /// records before the request go to the old file, which is then flushed
  /// and closed, and the later ones to the new file; no record is cut or
  /// lost. The outcome is logged ("trace file reopened" or why not; on an
  /// error the old file stays in use). Nothing for standard output.
  void reopen();

  /// Reopens done so far (for waiting on one in tests).
  uint64_t reopened() const noexcept {
    return reopened_.load(std::memory_order_relaxed);
  }

  /// Waits until the writer wrote what was recorded before the call, at
  /// most `limit` (false on timeout, e.g. a blocked output).
  bool flush(std::chrono::milliseconds limit);

  /// Events written to the file.
  uint64_t written() const noexcept {
    return written_.load(std::memory_order_relaxed);
  }

  /// Events lost: the buffer was full, or the file could not be written.
  uint64_t dropped() const noexcept;

  const std::string& boot() const noexcept {
    return opts_.boot;
  }

private:
  explicit trace_writer(options opts);
  trace_ring& local_ring();
  void run();
  size_t pass();
  void handle(trace::event& ev);
  void emit(const trace::event& ev);
  /// Emits the definition of `ev`'s audience when the current file lacks it.
  void define_audience(const trace::event& ev);
  void write_out(bool force);
  bool open_file();
  void rotate();
  void reopen_now();
  void fail(const std::string& why, uint64_t lost);

  options opts_;
  const bool to_file_;
  const uint64_t generation_;
  std::atomic<bool> observed_{false};
  std::atomic<uint64_t> file_payload_bytes_{0};
  std::atomic<trace_consumer*> consumer_{nullptr};

  // Rings, one per recording thread.
  mutable std::mutex rings_mtx_;
  std::vector<std::pair<std::thread::id, std::unique_ptr<trace_ring>>> rings_;
  std::atomic<size_t> ring_count_{0};

  // Control.
  std::mutex mtx_;
  std::condition_variable cv_;
  std::condition_variable passed_;
  bool stopping_ = false;
  bool reopen_requested_ = false;
  uint64_t flush_requested_ = 0;
  uint64_t passes_ = 0;
  std::atomic<bool> sleeping_{false};

  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> write_failed_{0};
  std::atomic<uint64_t> reopened_{0};
  std::thread thread_;

  // Writer thread only.
  uint64_t seq_ = 0;
  std::vector<uint64_t> lost_seen_;
  trace::event ev_;
  std::string out_;
  size_t out_events_ = 0;
  FILE* file_ = nullptr;
  uint64_t file_bytes_ = 0;
  /// Audience number -> its definition (the latest 4096), and which of them
  /// the current file has defined. A file repeats a definition as it was
  /// first written (same seq, ts and count): a copy, not a new event.
  std::unordered_map<uint64_t, trace::event> audiences_;
  std::unordered_set<uint64_t> defined_;
  std::chrono::steady_clock::time_point failed_at_{};
  std::chrono::steady_clock::time_point logged_at_{};
};

/// A fresh boot id: 16 hex digits from the CSPRNG.
std::string new_boot_id();

/// Rotated file `index` of `path` (0: the path itself), named as spdlog's
/// rotating sink names them: "t.json" -> "t.1.json", "t" -> "t.1".
std::string rotated_name(const std::string& path, uint32_t index);

} // namespace convoke::server
