#include "convoke/proto/trace_wire.hpp"

#include <array>

namespace convoke::proto {

namespace {

constexpr std::array<std::string_view, 9> kind_names{
  "relay", "undeliverable", "dropped", "rejected", "written", "gap", "joined", "left", "audience",
};

} // namespace

std::string_view trace_kind_name(trace::kind k) noexcept {
  auto i = static_cast<size_t>(k);
  return i < kind_names.size() ? kind_names[i] : std::string_view{"event"};
}

std::optional<trace::kind> trace_kind_from_name(std::string_view name) noexcept {
  for (size_t i = 0; i < kind_names.size(); ++i)
    if (kind_names[i] == name)
      return static_cast<trace::kind>(i);
  return std::nullopt;
}

void to_wire(const trace::event& ev, v1::TraceEvent& out) {
  out.Clear();
  out.set_event(std::string{trace_kind_name(ev.what)});
  out.set_seq(ev.seq);
  out.set_boot(ev.boot);
  out.set_ts_unix_nanos(ev.ts_ns);
  out.set_message_id(ev.message_id);
  out.set_last_message_id(ev.last_message_id);
  out.set_sender(ev.sender);
  out.set_recipient(ev.recipient);
  out.set_route(ev.route);
  out.set_count(ev.count);
  out.set_audience(ev.audience);
  for (auto& r : ev.recipients)
    out.add_recipients(r);
  out.set_payload_size(ev.payload_bytes);
  out.set_sent_unix_nanos(ev.sent_ns);
  out.set_accepted_unix_nanos(ev.accepted_ns);
  out.set_trace_id(ev.trace_id);
  out.set_span_id(ev.span_id);
  out.set_request_id(ev.request_id);
  out.set_in_reply_to(ev.in_reply_to);
  out.set_payload(ev.payload);
  out.set_payload_truncated(ev.payload_truncated);
  out.set_reason(ev.reason);
  out.set_address(ev.address);
  out.set_identity(ev.identity);
  out.set_nodes(ev.nodes);
}

std::optional<trace::event> from_wire(const v1::TraceEvent& in) {
  auto k = trace_kind_from_name(in.event());
  if (!k)
    return std::nullopt;
  trace::event ev;
  ev.what = *k;
  ev.seq = in.seq();
  ev.boot = in.boot();
  ev.ts_ns = in.ts_unix_nanos();
  ev.message_id = in.message_id();
  ev.last_message_id = in.last_message_id();
  ev.sender = in.sender();
  ev.recipient = in.recipient();
  ev.route = in.route();
  ev.count = in.count();
  ev.audience = in.audience();
  ev.recipients.assign(in.recipients().begin(), in.recipients().end());
  ev.payload_bytes = in.payload_size();
  ev.sent_ns = in.sent_unix_nanos();
  ev.accepted_ns = in.accepted_unix_nanos();
  ev.trace_id = in.trace_id();
  ev.span_id = in.span_id();
  ev.request_id = in.request_id();
  ev.in_reply_to = in.in_reply_to();
  ev.payload = in.payload();
  ev.payload_truncated = in.payload_truncated();
  ev.reason = in.reason();
  ev.address = in.address();
  ev.identity = in.identity();
  ev.nodes = in.nodes();
  return ev;
}

} // namespace convoke::proto
