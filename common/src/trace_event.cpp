#include "convoke/common/trace_event.hpp"

#include <array>
#include <charconv>

#include "convoke/common/text.hpp"

namespace convoke::trace {

namespace {

constexpr std::array<std::string_view, 9> kind_names{
  "relay", "undeliverable", "dropped", "rejected", "written", "gap", "joined", "left", "audience"};

// The writer formats up to millions of records a second: plain appends and
// std::to_chars, no format-string parsing.

void append_number(std::string& out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_signed(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_hex(std::string& out, std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
}

/// A logfmt value: as is when it needs no quoting (the common case).
void append_value(std::string& out, std::string_view v) {
  bool plain = !v.empty();
  for (unsigned char c : v)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) {
      plain = false;
      break;
    }
  if (plain)
    out += v;
  else
    out += logfmt_value(v);
}

void text_key(std::string& out, std::string_view key) {
  out.push_back(' ');
  out += key;
  out.push_back('=');
}

void text_number(std::string& out, std::string_view key, uint64_t v) {
  text_key(out, key);
  append_number(out, v);
}

void text_string(std::string& out, std::string_view key, std::string_view v) {
  text_key(out, key);
  append_value(out, v);
}

bool is_range(const event& ev) {
  return ev.last_message_id != 0 && ev.last_message_id != ev.message_id;
}

void text_ids(std::string& out, const event& ev) {
  if (ev.message_id == 0)
    return;
  out += " m=";
  append_number(out, ev.message_id);
  if (is_range(ev)) {
    out += "..";
    append_number(out, ev.last_message_id);
  }
}

void text_names(std::string& out, const std::vector<std::string>& names) {
  bool first = true;
  for (auto& n : names) {
    if (!first)
      out.push_back(',');
    first = false;
    append_value(out, n);
  }
}

} // namespace

std::string_view to_string(kind k) noexcept {
  auto i = static_cast<size_t>(k);
  return i < kind_names.size() ? kind_names[i] : std::string_view{"event"};
}

std::optional<kind> kind_from_string(std::string_view name) noexcept {
  for (size_t i = 0; i < kind_names.size(); ++i)
    if (kind_names[i] == name)
      return static_cast<kind>(i);
  return std::nullopt;
}

void append_text(std::string& out, const event& ev) {
  append_timestamp(out, ev.ts_ns);
  out.push_back(' ');
  out += to_string(ev.what);
  switch (ev.what) {
  case kind::joined:
  case kind::left:
    out.push_back(' ');
    append_value(out, ev.sender);
    if (!ev.address.empty())
      text_string(out, "address", ev.address);
    if (!ev.identity.empty())
      text_string(out, "identity", ev.identity);
    if (!ev.reason.empty())
      text_string(out, "reason", ev.reason);
    return;
  case kind::audience:
    text_number(out, "audience", ev.audience);
    text_number(out, "agents", ev.recipients.size());
    out += " to=";
    text_names(out, ev.recipients);
    return;
  case kind::gap:
    text_number(out, "lost", ev.count);
    text_string(out, "reason", ev.reason);
    return;
  case kind::dropped:
    text_ids(out, ev);
    text_string(out, "to", ev.recipient);
    text_number(out, "count", ev.count);
    text_string(out, "reason", ev.reason);
    if (!ev.nodes.empty())
      text_string(out, "nodes", ev.nodes);
    return;
  default:
    break;
  }
  text_ids(out, ev);
  out.push_back(' ');
  append_value(out, ev.sender.empty() ? std::string_view{"-"} : std::string_view{ev.sender});
  out += " -> ";
  if (ev.recipient.empty())
    out.push_back('*');
  else
    append_value(out, ev.recipient);
  if (!ev.route.empty())
    text_string(out, "route", ev.route);
  if (ev.what == kind::relay && ev.recipient.empty()) {
    text_number(out, "fanout", ev.count);
    if (ev.audience != 0)
      text_number(out, "audience", ev.audience);
  } else if (ev.count > 1) {
    text_number(out, "count", ev.count);
  }
  if (!ev.reason.empty())
    text_string(out, "reason", ev.reason);
  if (!ev.nodes.empty())
    text_string(out, "nodes", ev.nodes);
  if (ev.what != kind::written && (ev.payload_bytes > 0 || ev.message_id != 0))
    text_number(out, "bytes", ev.payload_bytes);
  if (ev.sent_ns > 0 && ev.accepted_ns >= ev.sent_ns && ev.what != kind::written)
    text_number(out, "ingress_us", static_cast<uint64_t>((ev.accepted_ns - ev.sent_ns) / 1000));
  if (ev.what == kind::written && ev.accepted_ns > 0 && ev.ts_ns >= ev.accepted_ns)
    text_number(out, "relay_us", static_cast<uint64_t>((ev.ts_ns - ev.accepted_ns) / 1000));
  if (ev.request_id != 0)
    text_number(out, "request", ev.request_id);
  if (ev.in_reply_to != 0)
    text_number(out, "reply_to", ev.in_reply_to);
  if (!ev.trace_id.empty()) {
    out += " trace=";
    append_hex(out, ev.trace_id);
  }
  if (!ev.span_id.empty()) {
    out += " span=";
    append_hex(out, ev.span_id);
  }
  if (!ev.payload.empty() || ev.payload_truncated) {
    out += " payload=";
    append_json_string(out, ev.payload);
    if (ev.payload_truncated)
      out += "...";
  }
}

std::string format_text(const event& ev) {
  std::string out;
  out.reserve(160);
  append_text(out, ev);
  return out;
}

namespace {

struct json_writer {
  std::string& out;

  void key(std::string_view k) {
    out += ",\"";
    out += k;
    out += "\":";
  }
  void string(std::string_view k, std::string_view v) {
    if (v.empty())
      return;
    key(k);
    append_json_string(out, v);
  }
  void number(std::string_view k, uint64_t v) {
    if (v == 0)
      return;
    key(k);
    append_number(out, v);
  }
  void signed_number(std::string_view k, int64_t v) {
    if (v == 0)
      return;
    key(k);
    append_signed(out, v);
  }
  void hex(std::string_view k, std::string_view bytes) {
    if (bytes.empty())
      return;
    key(k);
    out.push_back('"');
    append_hex(out, bytes);
    out.push_back('"');
  }
  void names(std::string_view k, const std::vector<std::string>& v) {
    key(k);
    out.push_back('[');
    bool first = true;
    for (auto& n : v) {
      if (!first)
        out.push_back(',');
      first = false;
      append_json_string(out, n);
    }
    out.push_back(']');
  }
};

} // namespace

void append_json(std::string& out, const event& ev) {
  out += "{\"ts\":\"";
  append_timestamp(out, ev.ts_ns);
  out += "\",\"event\":\"";
  out += to_string(ev.what);
  out += "\",\"seq\":";
  append_number(out, ev.seq);
  out += ",\"boot\":";
  append_json_string(out, ev.boot);
  json_writer w{out};
  w.number("message_id", ev.message_id);
  w.number("last_message_id", ev.last_message_id);
  if (ev.what == kind::joined || ev.what == kind::left) {
    w.string("agent", ev.sender);
    w.string("address", ev.address);
    w.string("identity", ev.identity);
  } else {
    w.string("from", ev.sender);
    if (ev.what == kind::relay && ev.recipient.empty()) {
      w.string("to", "*");
      w.key("fanout");
      append_number(out, ev.count);
    } else {
      w.string("to", ev.recipient);
    }
  }
  w.string("route", ev.route);
  w.number("count", ev.count);
  w.number("audience", ev.audience);
  if (ev.what == kind::audience || !ev.recipients.empty())
    w.names("recipients", ev.recipients);
  w.number("bytes", ev.payload_bytes);
  w.signed_number("sent_unix_nanos", ev.sent_ns);
  w.signed_number("accepted_unix_nanos", ev.accepted_ns);
  w.signed_number("ts_unix_nanos", ev.ts_ns);
  w.hex("trace_id", ev.trace_id);
  w.hex("span_id", ev.span_id);
  w.number("request_id", ev.request_id);
  w.number("in_reply_to", ev.in_reply_to);
  if (!ev.payload.empty() || ev.payload_truncated) {
    w.key("payload");
    append_json_string(out, ev.payload);
    out += ",\"payload_truncated\":";
    out += ev.payload_truncated ? "true" : "false";
  }
  w.string("reason", ev.reason);
  w.string("nodes", ev.nodes);
  out.push_back('}');
}

std::string format_json(const event& ev) {
  std::string out;
  out.reserve(256);
  append_json(out, ev);
  return out;
}

} // namespace convoke::trace
