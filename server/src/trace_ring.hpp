#pragma once

// A single-producer single-consumer ring of variable-size byte records: the
// relay thread writes trace records into it, the trace writer's thread reads
// them. Neither side takes a lock or makes a system call; the producer pays
// a copy and two relaxed loads plus one release store per record.
//
// Layout: each record is a 4-byte length followed by its bytes, padded to 8.
// A record that does not fit before the end of the buffer is preceded by a
// wrap marker (length `wrap`) and written at the start.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

namespace convoke::server {

class trace_ring {
public:
  /// `capacity` is rounded up to a power of two (at least 4 KiB). The
  /// memory is allocated now but touched only as records are written.
  explicit trace_ring(size_t capacity) {
    size_t c = 4096;
    while (c < capacity)
      c <<= 1;
    capacity_ = c;
    buf_.reset(new char[c]);
  }

  size_t capacity() const noexcept {
    return capacity_;
  }

  /// The largest record accepted.
  size_t max_record() const noexcept {
    return capacity_ / 4;
  }

  // --- producer ---------------------------------------------------------

  /// Room for a record of `n` bytes, or nullptr when the ring is full (the
  /// caller counts the loss). Call commit() after writing the bytes.
  char* reserve(uint32_t n) noexcept {
    if (n == 0 || n > max_record())
      return nullptr;
    size_t need = padded(n);
    size_t pos = head_ & (capacity_ - 1);
    size_t to_end = capacity_ - pos;
    size_t total = need <= to_end ? need : to_end + need; // a wrap skips the rest
    if (head_ + total - tail_cache_ > capacity_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head_ + total - tail_cache_ > capacity_)
        return nullptr;
    }
    if (need > to_end) {
      if (to_end >= sizeof(uint32_t))
        store_len(pos, wrap);
      reserved_head_ = head_ + to_end;
      pos = 0;
    } else {
      reserved_head_ = head_;
    }
    store_len(pos, n);
    pending_ = need;
    return buf_.get() + pos + header;
  }

  void commit() noexcept {
    head_ = reserved_head_ + pending_;
    head_pub_.store(head_, std::memory_order_release);
  }

  /// Records the producer could not write (reserve returned nullptr).
  void count_lost() noexcept {
    lost_.store(lost_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // --- consumer ---------------------------------------------------------

  /// Calls `f(std::string_view)` for each record written so far, at most
  /// `limit`, and frees their space. Returns how many.
  template <class F>
  size_t drain(F&& f, size_t limit = SIZE_MAX) {
    size_t head = head_pub_.load(std::memory_order_acquire);
    size_t tail = tail_.load(std::memory_order_relaxed);
    size_t n = 0;
    while (tail != head && n < limit) {
      size_t pos = tail & (capacity_ - 1);
      size_t to_end = capacity_ - pos;
      if (to_end < sizeof(uint32_t) || load_len(pos) == wrap) {
        tail += to_end;
        continue;
      }
      uint32_t len = load_len(pos);
      f(std::string_view{buf_.get() + pos + header, len});
      tail += padded(len);
      ++n;
      // Free space as we go, so that a long drain does not starve the producer.
      if ((n & 255) == 0)
        tail_.store(tail, std::memory_order_release);
    }
    tail_.store(tail, std::memory_order_release);
    return n;
  }

  bool empty() const noexcept {
    return head_pub_.load(std::memory_order_acquire) == tail_.load(std::memory_order_relaxed);
  }

  uint64_t lost() const noexcept {
    return lost_.load(std::memory_order_relaxed);
  }

private:
  static constexpr uint32_t wrap = 0xffffffffu;
  static constexpr size_t header = 8; // length, then 4 bytes of padding

  static size_t padded(uint32_t n) noexcept {
    return (header + n + 7) & ~size_t{7};
  }

  void store_len(size_t pos, uint32_t n) noexcept {
    std::memcpy(buf_.get() + pos, &n, sizeof n);
  }

  uint32_t load_len(size_t pos) const noexcept {
    uint32_t n;
    std::memcpy(&n, buf_.get() + pos, sizeof n);
    return n;
  }

  size_t capacity_;
  std::unique_ptr<char[]> buf_;
  // Producer side (own cache line).
  alignas(64) size_t head_ = 0;
  size_t reserved_head_ = 0;
  size_t pending_ = 0;
  size_t tail_cache_ = 0;
  std::atomic<uint64_t> lost_{0};
  alignas(64) std::atomic<size_t> head_pub_{0};
  // Consumer side.
  alignas(64) std::atomic<size_t> tail_{0};
};

} // namespace convoke::server
