#pragma once

// The compact binary form of a trace event, as the relay thread records it:
// a fixed header of numbers followed by the strings' bytes, copied into the
// trace ring without allocation or formatting. The trace writer's thread
// decodes it into a convoke::trace::event. CAF-free.

#include <cstdint>
#include <string_view>

#include "convoke/common/trace_event.hpp"

namespace convoke::server {

/// What the relay thread knows about an event; strings are views into the
/// relay's buffers, valid only during the call that records it.
struct record_fields {
  trace::kind what = trace::kind::relay;
  bool payload_truncated = false;
  uint32_t count = 0;
  uint32_t payload_bytes = 0;
  uint64_t message_id = 0;
  uint64_t last_message_id = 0;
  uint64_t audience = 0;
  uint64_t request_id = 0;
  uint64_t in_reply_to = 0;
  int64_t ts_ns = 0;
  int64_t sent_ns = 0;
  int64_t accepted_ns = 0;
  std::string_view sender;
  std::string_view recipient;
  std::string_view route;
  std::string_view trace_id;
  std::string_view span_id;
  std::string_view payload;
  std::string_view reason;
  std::string_view address;
  std::string_view identity;
  /// kind::audience: the names, each preceded by its length (2 bytes, host
  /// order), as built by append_name.
  std::string_view names;
  /// Cluster: the nodes a message crossed, "a>b,c" (docs/cluster.md).
  std::string_view nodes;
};

/// The encoded size of `f` (header and strings; strings longer than 64 KiB
/// are cut there, trace ids at 32 bytes).
size_t record_size(const record_fields& f) noexcept;

/// Shortens `f` until its encoded size is at most `limit` (when the ring
/// is small, e.g. trace.buffer = 64 KiB takes records up to 16 KiB): first
/// the payload (then marked truncated), then audience names (whole names;
/// `count` still says how many), then the other strings. Returns the new
/// record_size(f). The views still point into the caller's buffers.
size_t fit_record(record_fields& f, size_t limit) noexcept;

/// Writes `f` into `out`, which has record_size(f) bytes. A payload cut at
/// the record's 64 KiB limit is marked truncated.
void encode_record(const record_fields& f, char* out) noexcept;

/// Decodes a record written by encode_record into `ev` (strings are
/// assigned, so a reused event keeps its capacity). False if `bytes` is not
/// a whole record (it never is in a ring the server wrote; checked anyway).
bool decode_record(std::string_view bytes, trace::event& ev);

/// Appends one name to an audience's `names` buffer.
template <class Buffer>
void append_name(Buffer& out, std::string_view name) {
  auto n = static_cast<uint16_t>(name.size() > 0xffff ? 0xffff : name.size());
  auto p = reinterpret_cast<const char*>(&n);
  out.insert(out.end(), p, p + sizeof n);
  out.insert(out.end(), name.data(), name.data() + n);
}

} // namespace convoke::server
