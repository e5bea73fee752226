#include "trace_record.hpp"

#include <algorithm>
#include <cstring>

namespace convoke::server {

namespace {

constexpr size_t max_string = 0xffff;
constexpr size_t max_trace_id = 32;
constexpr size_t string_count = 11;

struct header {
  uint8_t what;
  uint8_t payload_truncated;
  uint16_t lengths[string_count];
  uint32_t count;
  uint32_t payload_bytes;
  uint64_t message_id;
  uint64_t last_message_id;
  uint64_t audience;
  uint64_t request_id;
  uint64_t in_reply_to;
  int64_t ts_ns;
  int64_t sent_ns;
  int64_t accepted_ns;
};

template <class F>
void for_each_string(const record_fields& f, F&& fn) {
  fn(f.sender.substr(0, max_string));
  fn(f.recipient.substr(0, max_string));
  fn(f.route.substr(0, max_string));
  fn(f.trace_id.substr(0, max_trace_id));
  fn(f.span_id.substr(0, max_trace_id));
  fn(f.payload.substr(0, max_string));
  fn(f.reason.substr(0, max_string));
  fn(f.address.substr(0, max_string));
  fn(f.identity.substr(0, max_string));
  fn(f.names.substr(0, max_string));
  fn(f.nodes.substr(0, max_string));
}

} // namespace

size_t record_size(const record_fields& f) noexcept {
  size_t n = sizeof(header);
  for_each_string(f, [&](std::string_view s) { n += s.size(); });
  return n;
}

size_t fit_record(record_fields& f, size_t limit) noexcept {
  auto n = record_size(f);
  if (n <= limit)
    return n;
  auto over = n - limit;
  // The payload: an excerpt anyway.
  if (auto p = std::min(f.payload.size(), max_string); p > 0) {
    auto cut = std::min(over, p);
    f.payload = f.payload.substr(0, p - cut);
    f.payload_truncated = true;
    over -= cut;
  }
  // Audience names: whole names only.
  if (over > 0 && !f.names.empty()) {
    auto names = f.names.substr(0, max_string);
    auto target = names.size() > over ? names.size() - over : 0;
    size_t keep = 0;
    while (keep + sizeof(uint16_t) <= names.size()) {
      uint16_t len;
      std::memcpy(&len, names.data() + keep, sizeof len);
      if (keep + sizeof len + len > target)
        break;
      keep += sizeof len + len;
    }
    over -= std::min(over, names.size() - keep);
    f.names = names.substr(0, keep);
  }
  // Then the other strings (hostile recipients and routes of undeliverable
  // messages, reasons, addresses).
  for (auto s : {&f.recipient, &f.route, &f.reason, &f.address, &f.identity, &f.nodes, &f.sender}) {
    if (over == 0)
      break;
    auto len = std::min(s->size(), max_string);
    auto cut = std::min(over, len);
    *s = s->substr(0, len - cut);
    over -= cut;
  }
  return record_size(f);
}

void encode_record(const record_fields& f, char* out) noexcept {
  header h;
  h.what = static_cast<uint8_t>(f.what);
  h.payload_truncated = f.payload_truncated || f.payload.size() > max_string ? 1 : 0;
  h.count = f.count;
  h.payload_bytes = f.payload_bytes;
  h.message_id = f.message_id;
  h.last_message_id = f.last_message_id;
  h.audience = f.audience;
  h.request_id = f.request_id;
  h.in_reply_to = f.in_reply_to;
  h.ts_ns = f.ts_ns;
  h.sent_ns = f.sent_ns;
  h.accepted_ns = f.accepted_ns;
  char* p = out + sizeof h;
  size_t i = 0;
  for_each_string(f, [&](std::string_view s) {
    h.lengths[i++] = static_cast<uint16_t>(s.size());
    if (!s.empty()) // an empty view's data() may be null, which memcpy may not get
      std::memcpy(p, s.data(), s.size());
    p += s.size();
  });
  std::memcpy(out, &h, sizeof h);
}

bool decode_record(std::string_view bytes, trace::event& ev) {
  header h;
  if (bytes.size() < sizeof h)
    return false;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.what > static_cast<uint8_t>(trace::kind::audience))
    return false;
  size_t total = sizeof h;
  for (auto len : h.lengths)
    total += len;
  if (total != bytes.size())
    return false;
  ev.what = static_cast<trace::kind>(h.what);
  ev.payload_truncated = h.payload_truncated != 0;
  ev.count = h.count;
  ev.payload_bytes = h.payload_bytes;
  ev.message_id = h.message_id;
  ev.last_message_id = h.last_message_id;
  ev.audience = h.audience;
  ev.request_id = h.request_id;
  ev.in_reply_to = h.in_reply_to;
  ev.ts_ns = h.ts_ns;
  ev.sent_ns = h.sent_ns;
  ev.accepted_ns = h.accepted_ns;
  const char* p = bytes.data() + sizeof h;
  auto next = [&](size_t i, std::string& s) {
    s.assign(p, h.lengths[i]);
    p += h.lengths[i];
  };
  next(0, ev.sender);
  next(1, ev.recipient);
  next(2, ev.route);
  next(3, ev.trace_id);
  next(4, ev.span_id);
  next(5, ev.payload);
  next(6, ev.reason);
  next(7, ev.address);
  next(8, ev.identity);
  // Audience names.
  ev.recipients.clear();
  std::string_view names{p, h.lengths[9]};
  ev.nodes.assign(p + h.lengths[9], h.lengths[10]);
  while (names.size() >= sizeof(uint16_t)) {
    uint16_t n;
    std::memcpy(&n, names.data(), sizeof n);
    names.remove_prefix(sizeof n);
    n = static_cast<uint16_t>(std::min<size_t>(n, names.size()));
    ev.recipients.emplace_back(names.substr(0, n));
    names.remove_prefix(n);
  }
  return true;
}

} // namespace convoke::server
