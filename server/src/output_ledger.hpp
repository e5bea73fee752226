#pragma once

// Which relayed messages a session has handed to CAF's write buffer and CAF
// has not yet reported written to the socket. CAF-free, unit-tested.
//
// Every run of bytes appended to CAF's buffer is recorded with the messages
// it carries; CAF's write reports (ack_writes) pop whole runs from the front.
// So when a session must give up on its backlog (shutdown deadline, slow
// consumer), it knows exactly how many messages, and which ids, never left
// the server, and can count and trace them instead of losing them silently.

#include <algorithm>
#include <cstdint>
#include <deque>

namespace convoke::server {

/// Messages in a range of ids (ids of one run are not necessarily
/// contiguous; first and last bound them).
struct message_range {
  uint64_t count = 0;
  uint64_t first_id = 0;
  uint64_t last_id = 0;

  void add(const message_range& other) {
    if (other.count == 0)
      return;
    first_id = count == 0 ? other.first_id : std::min(first_id, other.first_id);
    last_id = count == 0 ? other.last_id : std::max(last_id, other.last_id);
    count += other.count;
  }
};

class output_ledger {
public:
  /// Records `bytes` appended to the write buffer, carrying `msgs` (count 0
  /// for frames that are not relayed messages: notices, heartbeats).
  void append(uint64_t bytes, message_range msgs) {
    if (bytes == 0)
      return;
    runs_.push_back({bytes, msgs});
    pending_ += bytes;
  }

  /// CAF reported `bytes` written: pops fully written runs (a partly
  /// written run stays, with what is left of it).
  void written(uint64_t bytes) {
    while (bytes > 0 && !runs_.empty()) {
      auto& r = runs_.front();
      auto n = bytes < r.bytes ? bytes : r.bytes;
      r.bytes -= n;
      pending_ -= n;
      bytes -= n;
      if (r.bytes == 0)
        runs_.pop_front();
    }
  }

  /// Forgets the newest runs totalling exactly `bytes` (they were removed
  /// from the buffer before being written) and returns their messages.
  /// Runs are only ever dropped whole: `bytes` must end on a run boundary.
  message_range drop_newest(uint64_t bytes) {
    message_range out;
    std::deque<run> dropped;
    while (bytes > 0 && !runs_.empty() && runs_.back().bytes <= bytes) {
      bytes -= runs_.back().bytes;
      pending_ -= runs_.back().bytes;
      dropped.push_front(runs_.back());
      runs_.pop_back();
    }
    for (auto& r : dropped)
      out.add(r.msgs);
    return out;
  }

  /// Records `bytes` inserted in front of the newest runs totalling
  /// `newest_bytes` (a frame that overtakes a backlog). False, and nothing
  /// recorded, if `newest_bytes` does not end on a run boundary.
  bool insert_before_newest(uint64_t newest_bytes, uint64_t bytes) {
    uint64_t sum = 0;
    auto i = runs_.end();
    while (sum < newest_bytes && i != runs_.begin()) {
      --i;
      sum += i->bytes;
    }
    if (sum != newest_bytes)
      return false;
    runs_.insert(i, run{bytes, {}});
    pending_ += bytes;
    return true;
  }

  /// Everything not yet written (e.g. at a forced close), and forgets it.
  message_range take_all() {
    message_range out;
    for (auto& r : runs_)
      out.add(r.msgs);
    runs_.clear();
    pending_ = 0;
    return out;
  }

  /// Bytes recorded and not yet reported written.
  uint64_t pending() const noexcept {
    return pending_;
  }

  /// Bytes of the newest runs that hold at most `limit` bytes in total:
  /// the largest suffix that can be dropped whole.
  uint64_t newest_runs_within(uint64_t limit) const noexcept {
    uint64_t sum = 0;
    for (auto i = runs_.rbegin(); i != runs_.rend() && sum + i->bytes <= limit; ++i)
      sum += i->bytes;
    return sum;
  }

private:
  struct run {
    uint64_t bytes;
    message_range msgs;
  };
  std::deque<run> runs_;
  uint64_t pending_ = 0;
};

} // namespace convoke::server
