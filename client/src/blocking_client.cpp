// blocking_client: a scoped (blocking) actor that owns one connection broker
// and waits for frames with receive() + timeouts. This is the SDK's answer to
// asyncio's run_until_complete() for one-off scripts.

#include "convoke/client/blocking_client.hpp"

#include <deque>

#include "convoke/common/net.hpp"
#include "convoke/common/units.hpp"
#include "frames.hpp"
#include "internal.hpp"

namespace convoke {

namespace {

using clock = std::chrono::steady_clock;

} // namespace

struct blocking_client::impl {
  client_options opts;
  std::string name;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<caf::scoped_actor> self;
  caf::actor conn;
  std::shared_ptr<std::atomic<uint64_t>> out_pending = std::make_shared<std::atomic<uint64_t>>(0);
  proto::frame_splitter splitter{detail::max_inbound_frame};
  std::deque<v1::Frame> inbox; // frames read but not yet consumed
  session_info session;
  bool connected = false;
  bool closed_by_server = false;
  std::string close_reason; // the connection's, e.g. a TLS failure
  uint64_t gen = 0;         // per connection; messages of older ones are ignored
  uint64_t next_seq = 1;

  void write(const v1::Frame& f) {
    std::vector<char> buf;
    proto::append_frame(f, buf);
    out_pending->fetch_add(buf.size());
    (*self)->send(conn, detail::write_atom::value, std::move(buf));
  }

  /// Blocks until the next frame (answering heartbeats on the way) or the
  /// deadline; nullopt on timeout or when the connection closed.
  std::optional<v1::Frame> next_frame(clock::time_point deadline) {
    for (;;) {
      if (!inbox.empty()) {
        auto f = std::move(inbox.front());
        inbox.pop_front();
        if (f.has_heartbeat() && f.heartbeat().seq() != 0) {
          write(detail::make_heartbeat_reply(f.heartbeat().seq()));
          continue;
        }
        return f;
      }
      if (closed_by_server || !conn)
        return std::nullopt;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      bool timed_out = false;
      (*self)->receive(
        [&](detail::frames_atom, uint64_t g, const std::vector<char>& bytes) {
          if (g != gen)
            return;
          splitter.append(bytes.data(), bytes.size());
          std::string_view body;
          while (splitter.next(body)) {
            v1::Frame f;
            if (proto::decode_frame(body, f) == proto::frame_error::none)
              inbox.push_back(std::move(f));
          }
          splitter.compact();
          if (splitter.error() != proto::frame_error::none) {
            // A frame larger than the server announced (max_delivery_bytes),
            // or of length 0: the stream cannot be trusted any further.
            closed_by_server = true;
            connected = false;
            return;
          }
          (*self)->send(conn, detail::credit_atom::value, static_cast<uint64_t>(bytes.size()));
        },
        [&](detail::disconnected_atom, uint64_t g, const std::string& reason) {
          if (g != gen)
            return;
          close_reason = reason;
          closed_by_server = true;
          connected = false;
        },
        caf::after(left) >> [&] { timed_out = true; });
      if (timed_out)
        return std::nullopt;
    }
  }

  /// One connection attempt to `to`, up to Welcome; `why` says what failed.
  std::error_code attempt(const server_address& to, std::string& why);

  std::error_code send(std::string_view recipient, std::string_view route, std::string_view payload,
                       const send_options& so, uint64_t request_id) {
    if (!connected)
      return errc::not_connected;
    if (auto err = detail::check_addressing(recipient, route))
      return err;
    if (out_pending->load() > opts.max_pending_bytes)
      return errc::send_buffer_full;
    auto f = detail::make_envelope(recipient, route, payload, so, next_seq, request_id, 0);
    if (session.max_frame_bytes > 0 && f.ByteSizeLong() > session.max_frame_bytes)
      return errc::message_too_large; // the server would close the connection
    ++next_seq;
    write(f);
    return {};
  }
};

blocking_client::blocking_client(client_options opts, std::string name)
  : impl_(std::make_unique<impl>()) {
  impl_->opts = std::move(opts);
  impl_->name = std::move(name);
}

blocking_client::~blocking_client() {
  auto& d = *impl_;
  close();
  d.self.reset(); // a scoped actor must go before its system
  d.sys.reset();
}

std::error_code blocking_client::connect(std::string* why) {
  auto& d = *impl_;
  auto fail = [&](errc code, std::string text) -> std::error_code {
    if (why)
      *why = std::move(text);
    return code;
  };
  if (d.connected)
    return {};
  if (!d.sys) {
    d.cfg = std::make_unique<caf::actor_system_config>();
    d.cfg->load<caf::io::middleman>();
    d.cfg->set("scheduler.max-threads", 1);
    d.cfg->set("scheduler.policy", caf::atom("sharing"));
    d.sys = std::make_unique<caf::actor_system>(*d.cfg);
    d.self = std::make_unique<caf::scoped_actor>(*d.sys);
  }
  // Each server once, in order: the first Welcome wins; a refusal is the
  // answer (the server is there and said no).
  std::string reasons;
  for (auto& to : server_list(d.opts)) {
    std::string reason;
    auto ec = d.attempt(to, reason);
    if (!ec) {
      d.session.server = to_string(to);
      return {};
    }
    if (ec != errc::not_connected)
      return fail(static_cast<errc>(ec.value()), std::move(reason));
    reasons += (reasons.empty() ? "" : "; ") + reason;
  }
  return fail(errc::not_connected, std::move(reasons));
}

std::error_code blocking_client::impl::attempt(const server_address& to, std::string& why) {
  auto fail = [&](errc code, std::string text) -> std::error_code {
    why = std::move(text);
    return code;
  };
  if (conn) { // a failed earlier attempt
    (*self)->send_exit(conn, caf::exit_reason::user_shutdown);
    conn = nullptr;
  }
  auto tls_ctx = detail::make_tls_context(opts, to);
  if (!tls_ctx)
    return fail(errc::invalid_argument, tls_ctx.error().text);
  // A script may block: connect right here, with the usual timeout.
  auto res = net::tcp_connect(to.host, to.port, opts.connect_timeout);
  if (!res)
    return fail(errc::not_connected, res.error().text);
  splitter = proto::frame_splitter{detail::max_inbound_frame};
  inbox.clear();
  closed_by_server = false;
  close_reason.clear();
  ++gen;
  out_pending = std::make_shared<std::atomic<uint64_t>>(0);
  conn = detail::spawn_connection(*sys, *res, caf::actor{*self}, gen, opts.max_inbound_bytes,
                                  out_pending, std::move(*tls_ctx));
  write(detail::make_hello(name, opts, {}, {}));
  auto deadline = clock::now() + opts.connect_timeout;
  auto where = to_string(to);
  while (auto f = next_frame(deadline)) {
    if (f->has_welcome()) {
      session = detail::to_session(f->welcome(), false);
      if (session.max_delivery_bytes > 0)
        splitter.set_max_frame_bytes(
          std::min(session.max_delivery_bytes, detail::max_inbound_frame));
      connected = true;
      return {};
    }
    if (f->has_notice() && f->notice().severity() == v1::Notice::ERROR)
      return fail(errc::refused, f->notice().code() + ": " + f->notice().text());
  }
  if (closed_by_server)
    return fail(errc::not_connected,
                close_reason.empty()
                  ? where + ": connection closed during handshake"
                  : where + ": connection closed during handshake: " + close_reason);
  return fail(errc::not_connected, where + ": no Welcome in time");
}

std::error_code blocking_client::broadcast(std::string_view payload, const send_options& opts) {
  return impl_->send({}, {}, payload, opts, 0);
}

std::error_code blocking_client::publish(std::string_view route, std::string_view payload,
                                         const send_options& opts) {
  if (route.empty())
    return errc::invalid_argument;
  return impl_->send({}, route, payload, opts, 0);
}

std::error_code blocking_client::send_to(std::string_view recipient, std::string_view payload,
                                         const send_options& opts) {
  if (recipient.empty())
    return errc::invalid_argument;
  return impl_->send(recipient, {}, payload, opts, 0);
}

std::optional<message> blocking_client::request(std::string_view recipient,
                                                std::string_view payload, duration timeout,
                                                request_error* err, const send_options& opts) {
  auto& d = *impl_;
  auto fail = [&](errc code, std::string text) -> std::optional<message> {
    if (err)
      *err = request_error{make_error_code(code), std::move(text)};
    return std::nullopt;
  };
  if (err)
    *err = request_error{};
  if (recipient.empty())
    return fail(errc::invalid_argument, "a request needs a recipient");
  // Unguessable, so that no other agent can answer in the recipient's place;
  // the reply must also come from the recipient.
  auto id = crypto::random_nonzero_u64();
  if (auto ec = d.send(recipient, {}, payload, opts, id))
    return fail(static_cast<errc>(ec.value()), ec.message());
  auto deadline = clock::now() + timeout;
  std::deque<v1::Frame> others; // kept for receive()
  std::optional<message> result;
  while (auto f = d.next_frame(deadline)) {
    if (f->has_delivery() && f->delivery().envelope().in_reply_to() == id
        && f->delivery().sender() == recipient) {
      result = detail::to_message(*f->mutable_delivery());
      break;
    }
    if (f->has_notice() && f->notice().request_id() == id) {
      fail(errc::refused, f->notice().code() + ": " + f->notice().text());
      break;
    }
    others.push_back(std::move(*f));
  }
  d.inbox.insert(d.inbox.begin(), others.begin(), others.end());
  if (!result && err && !err->code)
    fail(d.closed_by_server ? errc::connection_lost : errc::timeout,
         d.closed_by_server ? "connection closed" : "no reply in time");
  return result;
}

std::optional<message> blocking_client::receive(duration timeout) {
  auto& d = *impl_;
  auto deadline = clock::now() + timeout;
  while (auto f = d.next_frame(deadline))
    if (f->has_delivery())
      return detail::to_message(*f->mutable_delivery());
  return std::nullopt;
}

void blocking_client::close() {
  auto& d = *impl_;
  if (!d.conn)
    return;
  if (d.connected) {
    v1::Frame bye;
    bye.mutable_goodbye()->set_code("client_exit");
    bye.mutable_goodbye()->set_reason("script finished");
    d.write(bye);
    (*d.self)->send(d.conn, detail::close_atom::value);
    // Wait for the server's acknowledgement and EOF.
    auto deadline = clock::now() + d.opts.stop_timeout;
    while (d.next_frame(deadline)) {
    }
  }
  (*d.self)->send_exit(d.conn, caf::exit_reason::user_shutdown);
  d.conn = nullptr;
  d.connected = false;
}

bool blocking_client::connected() const noexcept {
  return impl_->connected;
}

const session_info& blocking_client::session() const noexcept {
  return impl_->session;
}

} // namespace convoke
