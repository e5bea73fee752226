// parse_json: one JSON trace line (trace.format = json, the keys of
// docs/observing.md) back into a trace::event. Trace files are operator
// input: any line may be cut, foreign or hostile, so every problem is a
// precise error text and nothing is unbounded (line size, nesting, names).

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <limits>

#include "convoke/common/text.hpp"
#include "convoke/common/trace_event.hpp"

namespace convoke::trace {

namespace {

using json = nlohmann::json;

/// Longer lines are refused unparsed: a payload excerpt is at most 1 MiB
/// (trace.payload-bytes), at most 6 bytes per byte once escaped.
constexpr size_t max_line_bytes = 8u << 20;
/// An event object holds strings, numbers, one array of strings.
constexpr int max_depth = 2;

struct field_error {
  std::string text;
};

template <class T>
T unsigned_field(const json& v, std::string_view key) {
  if (v.is_number_unsigned()) {
    auto n = v.get<uint64_t>();
    if (n <= std::numeric_limits<T>::max())
      return static_cast<T>(n);
  } else if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    auto n = static_cast<uint64_t>(v.get<int64_t>());
    if (n <= std::numeric_limits<T>::max())
      return static_cast<T>(n);
  }
  throw field_error{fmt::format("'{}' is not an integer from 0 to {}", key,
                                static_cast<uint64_t>(std::numeric_limits<T>::max()))};
}

int64_t signed_field(const json& v, std::string_view key) {
  if (v.is_number_integer() && !v.is_number_unsigned())
    return v.get<int64_t>();
  if (v.is_number_unsigned() && v.get<uint64_t>() <= uint64_t{INT64_MAX})
    return static_cast<int64_t>(v.get<uint64_t>());
  throw field_error{fmt::format("'{}' is not a 64-bit integer", key)};
}

std::string string_field(const json& v, std::string_view key) {
  if (!v.is_string())
    throw field_error{fmt::format("'{}' is not a string", key)};
  return v.get<std::string>();
}

std::string hex_field(const json& v, std::string_view key) {
  auto text = string_field(v, key);
  auto bytes = from_hex(text);
  if (!bytes)
    throw field_error{fmt::format("'{}' is not hex digits", key)};
  return std::move(*bytes);
}

void apply(event& ev, const std::string& key, const json& v) {
  // The keys of format_json (the contract of issue 10); unknown keys are
  // ignored, so newer servers' files stay readable.
  if (key == "ts" || key == "event") {
    // handled by the caller
  } else if (key == "seq") {
    ev.seq = unsigned_field<uint64_t>(v, key);
  } else if (key == "boot") {
    ev.boot = string_field(v, key);
  } else if (key == "ts_unix_nanos") {
    ev.ts_ns = signed_field(v, key);
  } else if (key == "message_id") {
    ev.message_id = unsigned_field<uint64_t>(v, key);
  } else if (key == "last_message_id") {
    ev.last_message_id = unsigned_field<uint64_t>(v, key);
  } else if (key == "from" || key == "agent") {
    ev.sender = string_field(v, key);
  } else if (key == "to") {
    ev.recipient = string_field(v, key);
    if (ev.recipient == "*")
      ev.recipient.clear();
  } else if (key == "route") {
    ev.route = string_field(v, key);
  } else if (key == "count") {
    ev.count = unsigned_field<uint32_t>(v, key);
  } else if (key == "fanout") {
    auto n = unsigned_field<uint32_t>(v, key);
    if (ev.count == 0)
      ev.count = n;
  } else if (key == "audience") {
    ev.audience = unsigned_field<uint64_t>(v, key);
  } else if (key == "recipients") {
    if (!v.is_array())
      throw field_error{"'recipients' is not an array of names"};
    ev.recipients.clear();
    ev.recipients.reserve(v.size());
    for (auto& name : v) {
      if (!name.is_string())
        throw field_error{"'recipients' is not an array of names"};
      ev.recipients.push_back(name.get<std::string>());
    }
  } else if (key == "bytes") {
    ev.payload_bytes = unsigned_field<uint32_t>(v, key);
  } else if (key == "sent_unix_nanos") {
    ev.sent_ns = signed_field(v, key);
  } else if (key == "accepted_unix_nanos" || key == "relayed_unix_nanos") {
    // relayed_unix_nanos: the name in files written before issue 10.
    ev.accepted_ns = signed_field(v, key);
  } else if (key == "trace_id") {
    ev.trace_id = hex_field(v, key);
  } else if (key == "span_id") {
    ev.span_id = hex_field(v, key);
  } else if (key == "request_id") {
    ev.request_id = unsigned_field<uint64_t>(v, key);
  } else if (key == "in_reply_to") {
    ev.in_reply_to = unsigned_field<uint64_t>(v, key);
  } else if (key == "payload") {
    ev.payload = string_field(v, key);
  } else if (key == "payload_truncated") {
    if (!v.is_boolean())
      throw field_error{"'payload_truncated' is not true or false"};
    ev.payload_truncated = v.get<bool>();
  } else if (key == "reason") {
    ev.reason = string_field(v, key);
  } else if (key == "address") {
    ev.address = string_field(v, key);
  } else if (key == "identity") {
    ev.identity = string_field(v, key);
  } else if (key == "nodes") {
    ev.nodes = string_field(v, key);
  }
}

/// A short, printable quote of what was found (for error texts).
std::string excerpt(std::string_view text) {
  constexpr size_t limit = 40;
  auto cut = text.substr(0, limit);
  auto quoted = json_string(cut);
  return text.size() > limit ? quoted + "..." : quoted;
}

} // namespace

parse_result parse_json(std::string_view line) {
  parse_result r;
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n'))
    line.remove_suffix(1);
  if (line.size() > max_line_bytes) {
    r.error = fmt::format("line of {} bytes, more than the {} a trace line may have", line.size(),
                          max_line_bytes);
    return r;
  }
  auto first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos) {
    r.error = "empty line";
    return r;
  }
  if (line[first] != '{') {
    r.error = fmt::format("not JSON (a JSON trace line starts with '{{'): {}", excerpt(line));
    return r;
  }
  bool too_deep = false;
  json doc;
  try {
    doc = json::parse(
      line.begin(), line.end(),
      [&too_deep](int depth, json::parse_event_t, json&) {
        if (depth > max_depth)
          too_deep = true;
        return !too_deep; // discard what is too deep (no recursion over it)
      },
      true);
  } catch (const json::parse_error& e) {
    if (e.byte > line.size())
      r.error = "not JSON: the line ends inside the object (cut short?)";
    else
      r.error = fmt::format("not JSON: syntax error at byte {}", e.byte);
    return r;
  } catch (const json::exception& e) { // e.g. out_of_range: a number like 3e929
    r.error = fmt::format("not a trace event: {}", e.what());
    return r;
  }
  if (too_deep) {
    r.error = fmt::format("not a trace event: nested deeper than {} levels", max_depth);
    return r;
  }
  if (!doc.is_object()) {
    r.error = "not a trace event: not a JSON object";
    return r;
  }
  auto kind_it = doc.find("event");
  if (kind_it == doc.end()) {
    r.error = "not a trace event: no 'event' field";
    return r;
  }
  if (!kind_it->is_string()) {
    r.error = "not a trace event: 'event' is not a string";
    return r;
  }
  auto kind_name = kind_it->get<std::string>();
  auto what = kind_from_string(kind_name);
  if (!what) {
    r.error = fmt::format("unknown event kind {}", excerpt(kind_name));
    return r;
  }
  auto ts_it = doc.find("ts");
  if (ts_it == doc.end()) {
    r.error = "not a trace event: no 'ts' field";
    return r;
  }
  std::optional<int64_t> ts;
  if (ts_it->is_string())
    ts = parse_timestamp(ts_it->get_ref<const std::string&>());
  if (!ts) {
    r.error = "'ts' is not an RFC 3339 time";
    return r;
  }
  event ev;
  ev.what = *what;
  ev.ts_ns = *ts;
  try {
    for (auto it = doc.begin(); it != doc.end(); ++it)
      apply(ev, it.key(), it.value());
  } catch (const field_error& e) {
    r.error = e.text;
    return r;
  }
  r.ev = std::move(ev);
  return r;
}

} // namespace convoke::trace
