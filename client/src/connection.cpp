// Client transport: the connector (a detached actor doing a bounded,
// non-blocking connect off the I/O thread) and the connection broker that
// moves frames between one socket and its agent.
//
// The broker splits the byte stream into whole frames and hands them to the
// agent in one message per read; the agent returns credit once it has
// processed them, and the broker stops reading when too much is outstanding.
// Outgoing frames arrive pre-encoded from the agent and go straight to the
// socket while CAF holds none of our output. On close it keeps reading until
// the server's EOF (bounded), then shuts the socket down. The CAF 0.17
// workarounds (direct writes, re-trigger, shutdown) are caf_support's.
//
// TLS (a tls:// address): the connection owns a tls::channel. Socket bytes
// are decrypted before framing, and the agent's frames are encrypted before
// they take the same write path. A TLS failure (an untrusted server, a wrong
// host name, the server's alert) ends the connection with OpenSSL's reason.

#include <fmt/format.h>

#include "convoke/caf_support/self_send.hpp"
#include "convoke/caf_support/socket.hpp"
#include "convoke/common/net.hpp"
#include "convoke/tls/tls.hpp"
#include "internal.hpp"

namespace convoke::detail {

namespace {

using caf_support::retrigger_atom;

constexpr size_t read_chunk = 64 * 1024;
constexpr auto linger_time = std::chrono::milliseconds{1000};

struct connection_state {
  static inline const char* name = "convoke.connection";
  caf::io::connection_handle hdl;
  caf::actor agent;
  uint64_t gen = 0;
  uint64_t window = 0;
  std::shared_ptr<std::atomic<uint64_t>> out_pending;
  /// Bytes in CAF's write buffer not yet reported written: while there are
  /// any, writes go through CAF too, so that order is kept.
  uint64_t caf_holds = 0;
  proto::frame_splitter splitter{max_inbound_frame};
  uint64_t in_flight = 0;
  /// Reading paused while the agent holds more than `window` unprocessed.
  caf_support::read_gate reads;
  bool closing = false;
  bool reported = false;
  /// TLS: the channel (null for plaintext), and its scratch buffers.
  std::unique_ptr<tls::channel> tls;
  std::vector<char> tls_in;
  std::vector<char> tls_out;
};

using connection_ptr = caf::io::stateful_broker<connection_state>*;

int socket_fd(connection_ptr self) {
  return caf_support::socket_fd(self->state.hdl);
}

/// `n` bytes of the agent's output have left: they no longer count against
/// its max_pending_bytes.
void sent(connection_ptr self, uint64_t n) {
  auto& pending = *self->state.out_pending;
  pending.fetch_sub(std::min<uint64_t>(n, pending.load()));
}

void report_closed(connection_ptr self, const std::string& reason) {
  auto& st = self->state;
  if (!st.reported) {
    st.reported = true;
    self->send(st.agent, disconnected_atom::value, st.gen, reason);
  }
}

/// Ends the connection now (caf_support::shut_down says why not close()).
void finish(connection_ptr self, const std::string& reason) {
  report_closed(self, reason);
  caf_support::shut_down(socket_fd(self));
  self->quit();
}

/// Writes bytes to the socket in order: directly while CAF holds none of
/// ours, else through CAF's buffer. `counted`: the bytes are already in
/// the agent's pending count (plaintext frames); TLS ciphertext is added to
/// it for as long as CAF holds it, so max_pending_bytes still bounds what
/// waits for the socket.
void write_wire(connection_ptr self, const char* data, size_t size, bool counted) {
  auto& st = self->state;
  if (st.caf_holds == 0) {
    auto n = caf_support::write_now(socket_fd(self), data, size);
    if (counted)
      sent(self, n);
    data += n;
    size -= n;
    if (size == 0)
      return;
  }
  auto& buf = self->wr_buf(st.hdl);
  buf.insert(buf.end(), data, data + size);
  st.caf_holds += size;
  if (!counted)
    st.out_pending->fetch_add(size);
  self->flush(st.hdl);
}

/// TLS: sends what the channel has for the server.
void flush_tls(connection_ptr self) {
  auto& st = self->state;
  auto& out = st.tls_out;
  out.clear();
  if (st.tls->take_output(out) > 0)
    write_wire(self, out.data(), out.size(), false);
  if (out.capacity() > 64 * 1024)
    std::vector<char>{}.swap(out);
}

/// Bytes from the server (decrypted if TLS): whole frames go to the agent.
void take_bytes(connection_ptr self, const char* data, size_t size) {
  auto& st = self->state;
  st.splitter.append(data, size);
  std::vector<char> out;
  std::string_view body;
  while (st.splitter.next(body)) {
    auto offset = out.size();
    out.resize(offset + proto::header_size + body.size());
    proto::write_header(out.data() + offset, static_cast<uint32_t>(body.size()));
    std::copy(body.begin(), body.end(), out.begin() + offset + proto::header_size);
  }
  st.splitter.compact();
  if (st.splitter.error() != proto::frame_error::none) {
    finish(self, "the server sent an invalid frame ("
                   + std::string{proto::to_code(st.splitter.error())} + ")");
    return;
  }
  if (out.empty())
    return;
  st.in_flight += out.size();
  self->send(st.agent, frames_atom::value, st.gen, std::move(out));
  if (st.in_flight > st.window)
    st.reads.pause(self, st.hdl);
}

caf::behavior connection_actor(connection_ptr self, int fd, caf::actor agent, uint64_t gen,
                               uint64_t window, std::shared_ptr<std::atomic<uint64_t>> out_pending,
                               tls::context_ptr tls_ctx) {
  auto& st = self->state;
  st.hdl = self->add_scribe(fd);
  st.agent = std::move(agent);
  st.gen = gen;
  st.window = window;
  st.out_pending = std::move(out_pending);
  self->configure_read(st.hdl, caf::io::receive_policy::at_most(read_chunk));
  self->ack_writes(st.hdl, true);
  // If the agent is gone (even before this broker started), close.
  self->monitor(st.agent);
  self->set_down_handler([self](const caf::down_msg&) { finish(self, "agent stopped"); });
  self->set_exit_handler([self](const caf::exit_msg&) { finish(self, "closed by agent"); });
  if (tls_ctx) {
    st.tls = std::make_unique<tls::channel>(std::move(tls_ctx));
    st.tls->start(); // the ClientHello; the agent's Hello waits in the channel
    flush_tls(self);
  }
  return {
    [self](const caf::io::new_data_msg& msg) {
      // Also while closing: the server's last frames (Notices about our final
      // messages, its Goodbye) come in before its EOF.
      auto& st = self->state;
      if (!st.tls) {
        take_bytes(self, msg.buf.data(), msg.buf.size());
        return;
      }
      bool was_done = st.tls->handshake_done();
      auto& plain = st.tls_in;
      plain.clear();
      auto ok = st.tls->feed(msg.buf.data(), msg.buf.size(), plain);
      flush_tls(self); // handshake messages, or our alert
      if (!ok) {
        finish(self,
               fmt::format("TLS {}: {}", was_done ? "error" : "handshake failed", ok.error().text));
        return;
      }
      if (!plain.empty())
        take_bytes(self, plain.data(), plain.size());
      if (plain.capacity() > 64 * 1024)
        std::vector<char>{}.swap(plain);
    },
    [self](limit_atom, uint64_t max_frame_bytes) {
      // The largest frame the server announced it sends (Welcome): a larger
      // length prefix is refused before any of its body is buffered.
      self->state.splitter.set_max_frame_bytes(
        static_cast<uint32_t>(std::min<uint64_t>(max_frame_bytes, max_inbound_frame)));
    },
    [self](credit_atom, uint64_t bytes) {
      auto& st = self->state;
      st.in_flight -= std::min(st.in_flight, bytes);
      if (st.in_flight <= st.window / 2) // also while closing
        st.reads.resume(self, st.hdl);
    },
    [self](retrigger_atom) { self->state.reads.on_retrigger(self, self->state.hdl); },
    [self](write_atom, const std::vector<char>& bytes) {
      auto& st = self->state;
      if (st.closing)
        return;
      if (!st.tls) {
        write_wire(self, bytes.data(), bytes.size(), true);
        return;
      }
      // Encrypted at once (or kept by the channel until the handshake is
      // done): the plaintext no longer counts, the ciphertext CAF keeps does.
      st.tls->write(bytes.data(), bytes.size());
      sent(self, bytes.size());
      flush_tls(self);
    },
    [self](const caf::io::data_transferred_msg& msg) {
      auto& st = self->state;
      st.caf_holds -= std::min<uint64_t>(st.caf_holds, msg.written);
      sent(self, msg.written);
    },
    [self](close_atom) {
      // The agent has queued its Goodbye. Keep reading until the server
      // acknowledges and closes (bounded by linger_time). No FIN from us
      // first: a server built on CAF 0.17 cannot write to a half-closed
      // connection, so it would lose the Notices and ack still in flight.
      auto& st = self->state;
      if (st.closing)
        return;
      st.closing = true;
      st.reads.resume(self, st.hdl);
      caf_support::delayed_self_send(self, linger_time, linger_atom::value);
    },
    [self](linger_atom) { finish(self, "closed by agent"); },
    [self](const caf::io::connection_closed_msg&) {
      auto& st = self->state;
      report_closed(self, st.closing ? "closed by agent" : "connection closed by the server");
      self->quit();
    },
  };
}

} // namespace

caf::actor spawn_connection(caf::actor_system& sys, int fd, caf::actor agent, uint64_t gen,
                            uint64_t window, std::shared_ptr<std::atomic<uint64_t>> out_pending,
                            tls::context_ptr tls_ctx) {
  return sys.middleman().spawn_broker(connection_actor, fd, std::move(agent), gen, window,
                                      std::move(out_pending), std::move(tls_ctx));
}

expected<tls::context_ptr> make_tls_context(const client_options& opts, const server_address& to) {
  if (!to.tls)
    return tls::context_ptr{};
  tls::client_settings s;
  s.ca_file = opts.tls_ca_file;
  s.cert_file = opts.tls_cert_file;
  s.key_file = opts.tls_key_file;
  s.server_name = opts.tls_server_name.empty() ? to.host : opts.tls_server_name;
  return tls::context::client(s);
}

void spawn_connector(caf::actor_system& sys, const client_options& opts, server_address to,
                     caf::actor agent, uint64_t gen,
                     std::shared_ptr<std::atomic<uint64_t>> out_pending) {
  // A blocking actor runs on its own thread: name resolution and the connect
  // wait never touch the scheduler or the I/O thread.
  sys.spawn([opts, to, agent, gen, out_pending](caf::blocking_actor* self) {
    // The TLS files are read here too, off the I/O thread, at every attempt
    // (a renewed certificate is picked up on reconnect).
    auto tls_ctx = make_tls_context(opts, to);
    if (!tls_ctx) {
      self->send(agent, connect_failed_atom::value, gen, tls_ctx.error().text);
      return;
    }
    auto res = net::tcp_connect(to.host, to.port, opts.connect_timeout);
    if (!res) {
      self->send(agent, connect_failed_atom::value, gen, res.error().text);
      return;
    }
    auto conn = spawn_connection(self->system(), *res, agent, gen, opts.max_inbound_bytes,
                                 out_pending, std::move(*tls_ctx));
    self->send(agent, connected_atom::value, gen, conn);
  });
}

} // namespace convoke::detail
