#include "frames.hpp"

#include <algorithm>

#include "convoke/client/error.hpp"
#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/trace_context.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/version.hpp"

namespace convoke::detail {

std::string hex_to_bytes(std::string_view hex) {
  return from_hex(hex).value_or(std::string{});
}

std::error_code check_addressing(std::string_view recipient, std::string_view route) {
  if (!recipient.empty() && !proto::check_agent_name(recipient))
    return errc::invalid_argument;
  if (!route.empty() && !proto::check_route(route))
    return errc::invalid_argument;
  return {};
}

v1::Frame make_envelope(std::string_view recipient, std::string_view route,
                        std::string_view payload, const send_options& so, uint64_t client_seq,
                        uint64_t request_id, uint64_t in_reply_to) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient(std::string{recipient});
  e->set_route(std::string{route});
  e->set_payload(std::string{payload});
  e->set_content_type(so.content_type);
  for (auto& [k, v] : so.headers)
    (*e->mutable_headers())[k] = v;
  auto trace = so.trace_id.empty() ? std::string{} : hex_to_bytes(so.trace_id);
  if (so.trace_id.empty())
    if (auto h = so.headers.find("traceparent"); h != so.headers.end())
      if (auto tp = trace::parse_traceparent(h->second)) // an OpenTelemetry caller's trace
        trace = tp->trace_id;
  if (trace.size() != 16) {
    trace.resize(16);
    crypto::random_bytes(trace.data(), trace.size());
  }
  e->set_trace_id(std::move(trace));
  e->set_sent_unix_nanos(unix_nanos());
  e->set_client_seq(client_seq);
  e->set_request_id(request_id);
  e->set_in_reply_to(in_reply_to);
  return f;
}

v1::Frame make_hello(const std::string& name, const client_options& opts,
                     const std::set<std::string>& routes, const std::string& resume_token) {
  v1::Frame f;
  auto h = f.mutable_hello();
  h->set_protocol_version(proto::protocol_version);
  h->set_agent_name(name);
  h->set_role(opts.role);
  h->set_token(opts.token);
  h->set_identity(opts.identity);
  for (auto& r : routes)
    h->add_routes(r);
  h->set_sdk_name(sdk_name);
  h->set_sdk_version(CONVOKE_VERSION_STRING);
  h->set_resume_token(resume_token);
  return f;
}

v1::Frame make_heartbeat_reply(uint64_t seq) {
  v1::Frame reply;
  reply.mutable_heartbeat()->set_unix_nanos(unix_nanos());
  reply.mutable_heartbeat()->set_reply_to(seq);
  return reply;
}

message to_message(v1::Delivery& d) {
  auto& e = *d.mutable_envelope();
  message m;
  m.id = d.message_id();
  m.sender = std::move(*d.mutable_sender());
  m.recipient = std::move(*e.mutable_recipient());
  m.route = std::move(*e.mutable_route());
  m.payload = std::move(*e.mutable_payload());
  m.content_type = std::move(*e.mutable_content_type());
  for (auto& [k, v] : e.headers())
    m.headers.emplace(k, v);
  if (!e.trace_id().empty())
    m.trace_id = to_hex(e.trace_id());
  else if (auto h = m.headers.find("traceparent"); h != m.headers.end())
    if (auto tp = trace::parse_traceparent(h->second))
      m.trace_id = to_hex(tp->trace_id);
  m.sent_unix_nanos = e.sent_unix_nanos();
  m.relayed_unix_nanos = d.relayed_unix_nanos();
  m.request_id = e.request_id();
  m.in_reply_to = e.in_reply_to();
  return m;
}

notice to_notice(const v1::Notice& n) {
  notice x;
  switch (n.severity()) {
  case v1::Notice::ERROR:
    x.severity = notice::level::error;
    break;
  case v1::Notice::WARNING:
    x.severity = notice::level::warning;
    break;
  default:
    x.severity = notice::level::info;
  }
  x.code = n.code();
  x.text = n.text();
  x.client_seq = n.client_seq();
  x.message_id = n.message_id();
  x.request_id = n.request_id();
  // At most a day: the value is the server's, a duration must not overflow.
  x.retry_after = std::chrono::milliseconds{
    static_cast<int64_t>(std::min<uint64_t>(n.retry_after_ms(), 86'400'000))};
  return x;
}

session_info to_session(const v1::Welcome& w, bool reconnected) {
  session_info s;
  s.session_id = w.session_id();
  s.agent_name = w.agent_name();
  s.server_name = w.server_name();
  s.server_version = w.server_version();
  s.heartbeat_interval = std::chrono::milliseconds{w.heartbeat_interval_ms()};
  s.idle_timeout = std::chrono::milliseconds{w.idle_timeout_ms()};
  s.max_frame_bytes = w.limits().max_frame_bytes();
  s.max_delivery_bytes = w.limits().max_delivery_bytes();
  s.reconnected = reconnected;
  s.features.assign(w.features().begin(), w.features().end());
  return s;
}

} // namespace convoke::detail
