// Session broker: one per connected agent.
//
// Lifecycle: actor init (handshake timer armed) -> Hello -> register with the
// router -> Welcome -> relaying (heartbeat + idle timers) -> closing (final
// Notice or Goodbye flushed, then FIN; forced after a grace period) -> exit.
// The router monitors registered sessions and unregisters them on exit.
// The protocol decisions (phases, what each frame asks for, the deadlines)
// are session_machine's (session_machine.hpp, CAF-free); this broker feeds
// it bytes, router answers and the time, and performs what it returns.
//
// Data path: each socket read is split into frames; envelopes are stamped
// (sender, message id, relay time), re-encoded once, and sent to the router
// as one relay_batch per read. Deliveries come back as pre-encoded byte runs
// that are appended to the socket's write buffer unless it is above the
// output high-water mark (slow consumer policy).
//
// TLS (tls.cert set): every session owns a tls::channel. Socket reads go
// through it and the session machine sees plaintext; everything written
// (write_bytes) is encrypted and the ciphertext takes the usual path
// (direct write, then CAF's buffer, counted by the output ledger). Without
// TLS the channel is null and nothing else changes.

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <chrono>
#include <optional>

#include <fmt/format.h>

#include "convoke/caf_support/self_send.hpp"
#include "convoke/caf_support/socket.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/trace_context.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/trace_wire.hpp"
#include "envelope_scan.hpp"
#include "messages.hpp"
#include "notice_limiter.hpp"
#include "output_ledger.hpp"
#include "session_machine.hpp"
#include "session_rules.hpp"
#include "summoner_wire.hpp"
#include "trace_record.hpp"

namespace convoke::server::internal {

namespace {

using steady = std::chrono::steady_clock;
namespace codes = proto::codes;
using caf_support::delayed_self_send;

using caf_support::retrigger_atom;
using phase = session_phase;

constexpr size_t small_read_chunk = 1024;
constexpr size_t large_read_chunk = 64 * 1024;
/// How often a session paused by limits.max-buffered-bytes checks again.
constexpr auto budget_retry_delay = std::chrono::milliseconds{20};

} // namespace

/// A session's observer in the trace tap (Observe). The tap calls it on the
/// trace writer's thread: deliver() hands the batch to the session (one
/// actor message per batch) and ready() is false until the session wrote
/// it and its output is back under half the high-water mark, so the tap
/// holds (bounded) and counts what this observer misses, and a slow
/// observer costs the relay nothing. It holds the session weakly: a batch
/// for a session that is gone goes nowhere.
struct session_tap final : tap_subscriber {
  explicit session_tap(caf::weak_actor_ptr s) : session(std::move(s)) {}

  bool ready() override {
    return !busy.load(std::memory_order_acquire);
  }

  void deliver(std::vector<trace::event>&& batch, uint64_t missed) override {
    auto strong = session.lock();
    if (!strong)
      return;
    busy.store(true, std::memory_order_release);
    caf::anon_send(caf::actor_cast<caf::actor>(strong), tap_atom::value,
                   tap_batch{this, std::move(batch), missed});
  }

  caf::weak_actor_ptr session;
  std::atomic<bool> busy{false};
};

struct session_state {
  static inline const char* name = "convoke.session";

  context_ptr ctx;
  /// The configuration when the session started (a reload does not change
  /// it); the machine refers to it, so it is declared before the machine.
  std::shared_ptr<const server_config> cfg;
  caf::io::connection_handle hdl;
  caf::actor listener;
  caf::actor router;
  uint64_t id = 0;
  std::string remote;
  /// The authenticated identity (auth.credentials); null otherwise.
  std::shared_ptr<const identity> ident;
  /// Its rights when they restrict anything; null = everything allowed (the
  /// hot path then costs one branch).
  const rights* acl = nullptr;
  /// The registration waiting for the authenticator's answer.
  std::optional<register_request> pending;
  steady::time_point hello_at;
  /// Its token check was queued for argon2id: it already counts as a failed
  /// login of peer_ip (login_throttle::failed) until it is accepted.
  bool login_counted = false;
  /// A failed login, answered at hello_at + auth.failed-login-delay.
  std::string refusal_code;
  std::string refusal_text;
  /// Hello routes the identity may not subscribe to, told after Welcome.
  std::vector<std::string> denied_routes;
  /// The peer's IP address (no port), as the listener counted it.
  std::string peer_ip;
  /// This session's principal in ctx.principals (rate limits, quarantine),
  /// from its Hello until it ends; and whether it has limits at all (the
  /// only cost on the relay path when it has none).
  rate_limits::principal* principal = nullptr;
  bool rate_limited = false;
  /// rate_limited Notices suppressed by `notices` (traced in one summary).
  uint64_t rate_limited_untraced = 0;
  /// The protocol: phase, input frames, deadlines (set at actor init).
  std::optional<session_machine> machine;
  std::string agent;
  std::string role;
  std::string sdk;
  /// What the admin listener shows of this agent (/connz): created with the
  /// register request, published in ctx.registry at Welcome.
  session_info_ptr info;
  relay_batch batch;
  std::vector<char> scratch;   // encoding single frames to write
  std::vector<char> reencoded; // slow path: an envelope re-encoded canonically
  /// What is in CAF's write buffer and not yet reported written (bytes and
  /// the messages they carry).
  output_ledger out;
  /// A register request went to the router: it may know this session, so
  /// the session leaves through the router before it quits.
  bool registered = false;
  bool leave_requested = false;
  /// CAF reported the connection closed: the descriptor is no longer ours.
  bool socket_gone = false;
  /// Bytes the socket took (directly or through CAF).
  uint64_t written_total = 0;
  /// How much of it the agent's TCP stack had acknowledged at the last check.
  uint64_t acked_seen = 0;
  /// One of CAF's write buffers grew beyond 64 KiB (see write_bytes).
  bool caf_buffer_grown = false;
  /// Messages for this agent that will never be written (its connection is
  /// closing); reported once, when the session ends, with `lost_reason`.
  message_range lost;
  std::string_view lost_reason = drop_reason::connection_closed;
  /// The code of the Notice or Goodbye that closed the session, if any
  /// (the `left` trace event's reason).
  std::string end_reason;
  size_t read_chunk = small_read_chunk;
  // Input credits: bytes handed to the router and not yet acknowledged.
  uint64_t in_flight = 0;
  /// Reading paused (input credits, budget, awaiting the router, draining).
  caf_support::read_gate reads;
  /// Current drop episode (slow consumer, drop policy): from the output
  /// going above the high-water mark until it is back under half of it;
  /// the relayed messages dropped during it.
  bool drop_episode = false;
  message_range dropping;
  /// Rate limit of this session's invalid_recipient/invalid_route Notices.
  notice_limiter notices;
  /// This session's share of ctx.stats.buffered_bytes (limits.max-buffered-bytes).
  uint64_t budget_share = 0;
  bool budget_retry_armed = false;
  /// Reading stopped because the server is above its budget while this
  /// session holds a large partial frame.
  bool budget_paused = false;
  /// TLS: the connection's channel (null for plaintext sessions, and once
  /// a plaintext peer is being told that TLS is required).
  std::unique_ptr<tls::channel> tls;
  /// TLS: ciphertext on its way to the socket, plaintext on its way in.
  std::vector<char> tls_out;
  std::vector<char> tls_in;
  /// TLS: bytes received so far (the first one decides TLS or plaintext).
  uint64_t tls_bytes_in = 0;
  /// The verified client certificate's name (its CN, else its first DNS
  /// subjectAltName; tls.verify-clients optional or require), empty
  /// without one. The auth work will use it as the agent's identity.
  std::string tls_peer_name;
  /// Lame duck: the reconnect hint of this session's Goodbye.
  uint64_t reconnect_after_ms = 0;
  /// Observe: the tap subscription (0: not observing; shared with the exit
  /// functor, which unsubscribes whatever way the session ends), its
  /// subscriber and the Observe's request id.
  std::shared_ptr<uint64_t> tap_id = std::make_shared<uint64_t>(0);
  std::shared_ptr<session_tap> tap_sub;
  uint64_t observe_request = 0;
  /// Trace events dropped here (the output was above half its high-water
  /// mark), told with the next batch written.
  uint64_t tap_missed = 0;
  /// The subscriber stays busy until the output is under half the mark.
  bool tap_waiting = false;
  /// A Summoner connection (the compatibility listener, docs/summoner.md):
  /// it speaks lines, its frames are written as relay lines and Warnings.
  bool summoner = false;
  /// Summoner: the registration (kept to retry under the next name when
  /// the name is taken), how many names were tried, and the peer's EOF
  /// seen before the router admitted it.
  register_request summoner_req;
  int summoner_names_tried = 0;
  bool summoner_eof = false;
};

namespace {

using session_ptr = caf::io::stateful_broker<session_state>*;

std::string who(session_ptr self) {
  auto& st = self->state;
  if (st.agent.empty())
    return fmt::format("session={} remote={}", st.id, st.remote);
  return fmt::format("agent={} session={}", logfmt_value(st.agent), st.id);
}

session_machine& machine(session_ptr self) {
  return *self->state.machine;
}

/// The socket of this session. Valid while the scribe is attached, which is
/// until the broker terminates (sessions never detach it with close()).
int socket_fd(session_ptr self) {
  return caf_support::socket_fd(self->state.hdl);
}

/// Arms a timer. Timers of seconds go through the listener, which keeps
/// them by session id and delivers them only to sessions still running.
/// CAF 0.17's delayed_send keeps its receiver's memory (even a weak
/// reference does: the actor lives in its control block's allocation) until
/// the timer fires, so every closed session would stay allocated for up to
/// timeouts.idle: with connection churn, the audit's "RSS grows by 23 MB
/// per 10k connections". Timers of milliseconds (re-trigger, budget retry)
/// use delayed_send.
template <class Atom>
void schedule_at(session_ptr self, steady::time_point due, Atom what) {
  self->send(self->state.listener, timer_atom::value, self->state.id, caf::atom_value{what},
             static_cast<int64_t>(due.time_since_epoch().count()));
}

template <class Atom>
void schedule(session_ptr self, std::chrono::milliseconds after, Atom what) {
  schedule_at(self, steady::now() + after, what);
}

/// Arms the wake-up the machine asks for, if any (after every event that
/// may move its deadlines).
void arm_wake(session_ptr self) {
  if (auto at = machine(self).wake_request())
    schedule_at(self, *at, wake_atom::value);
}

/// Gives back the capacity of CAF's unsent-output buffer once it is empty.
/// CAF only clear()s its two write buffers (and swaps them), so a backlog
/// would otherwise stay allocated for the life of the connection.
void release_write_buffer(session_ptr self) {
  auto& buf = self->wr_buf(self->state.hdl);
  if (buf.empty() && buf.capacity() > 64 * 1024) {
    bump(self->state.ctx->stats.released_bytes, buf.capacity());
    std::vector<char>{}.swap(buf);
  }
}

/// Messages fully contained in the first `sent` bytes of a run of frames.
uint64_t frames_within(const char* data, size_t size, size_t sent) {
  uint64_t n = 0;
  size_t at = 0;
  while (at + proto::header_size <= size) {
    auto end = at + proto::header_size + proto::read_header(data + at);
    if (end > sent)
      break;
    ++n;
    at = end;
  }
  return n;
}

/// Writes bytes to the agent, in order; `msgs` are the relayed messages
/// they carry (none for notices and heartbeats). When CAF holds nothing of
/// ours, try the socket directly (non-blocking): most writes then finish
/// right here, without CAF's extra multiplexer round and epoll_ctl calls.
/// Whatever the socket does not take goes to CAF's buffer, and from then on
/// everything goes there until CAF reports it written (data_transferred_msg).
/// The ledger knows which messages are still in CAF's buffer.
void write_wire(session_ptr self, const char* data, size_t size, message_range msgs = {}) {
  auto& st = self->state;
  // After a backlog, CAF's active write buffer still has the backlog's
  // capacity; it only gives it up when a write through CAF swaps its two
  // buffers. So the first write after a backlog goes through CAF (not
  // directly), and the old buffer, now the empty offline one, is released.
  if (st.out.pending() == 0 && st.caf_buffer_grown) {
    st.caf_buffer_grown = false;
    auto& buf = self->wr_buf(st.hdl);
    buf.insert(buf.end(), data, data + size);
    st.out.append(size, msgs);
    self->flush(st.hdl); // CAF is idle: it swaps the buffers now
    release_write_buffer(self);
    return;
  }
  if (st.out.pending() == 0) {
    if (auto sent = caf_support::write_now(socket_fd(self), data, size); sent > 0) {
      st.written_total += sent;
      if (sent == size)
        return;
      // Ciphertext cannot be split into frames: under TLS, messages of a
      // partly written run count as unwritten until CAF reports the rest.
      auto done = msgs.count == 0 || st.tls ? 0
                  : st.summoner ? static_cast<uint64_t>(std::count(data, data + sent, '\n'))
                                : frames_within(data, size, sent);
      msgs.count -= std::min(msgs.count, done);
      data += sent;
      size -= sent;
    }
    // EAGAIN (socket full) or an error: CAF takes over and reports errors
    // as connection_closed_msg.
  }
  auto& buf = self->wr_buf(st.hdl);
  buf.insert(buf.end(), data, data + size);
  st.out.append(size, msgs);
  if (buf.capacity() > 64 * 1024)
    st.caf_buffer_grown = true;
  self->flush(st.hdl);
}

/// Keeps a scratch buffer from holding on to the size of the largest frame.
template <class Buffer>
void trim(Buffer& buf) {
  if (buf.capacity() > 64 * 1024)
    Buffer{}.swap(buf);
}

/// TLS: sends what the channel has for the socket (records, handshake
/// messages, alerts, close_notify). The ledger counts ciphertext: it is
/// what CAF holds. `msgs` are the messages these bytes carry.
void flush_tls(session_ptr self, message_range msgs = {}) {
  auto& st = self->state;
  auto& out = st.tls_out;
  out.clear();
  if (st.tls->take_output(out) == 0) {
    st.lost.add(msgs); // the channel is closed or failed: never sent
    return;
  }
  write_wire(self, out.data(), out.size(), msgs);
  trim(out);
}

/// Writes plaintext to the agent, in order (see write_wire); under TLS
/// encrypted first.
void write_bytes(session_ptr self, const char* data, size_t size, message_range msgs = {}) {
  auto& st = self->state;
  if (!st.tls) {
    write_wire(self, data, size, msgs);
    return;
  }
  st.tls->write(data, size);
  flush_tls(self, msgs);
}

/// The trace and span ids of an envelope: its trace_id field, else those of
/// a valid W3C `traceparent` header (an invalid one is relayed, not used).
void trace_ids(const envelope_view& view, record_fields& f) {
  f.trace_id = view.trace_id.substr(0, 32);
  if (view.traceparent.empty())
    return;
  auto tp = trace::parse_traceparent(view.traceparent);
  if (!tp)
    return;
  if (f.trace_id.empty() || f.trace_id == tp->trace_id) {
    thread_local trace::traceparent kept; // the views below point into it
    kept = std::move(*tp);
    f.trace_id = kept.trace_id;
    f.span_id = kept.parent_id;
  }
}

/// Traces messages that will never be written to this agent (one record
/// for the whole range) and, with `count`, adds them to `dropped`.
void account_dropped(session_ptr self, const message_range& msgs, std::string_view reason,
                     bool count = true) {
  if (msgs.count == 0)
    return;
  auto& st = self->state;
  auto& ctx = *st.ctx;
  if (count) {
    bump(ctx.stats.dropped, msgs.count);
    if (st.info)
      st.info->dropped.add(msgs.count);
  }
  // An agent that leaves while messages are on their way to it is normal:
  // info. Drops the server decided on (slow consumer, shutdown): warn.
  ctx.log_session->log(reason == drop_reason::connection_closed ? spdlog::level::info
                                                                : spdlog::level::warn,
                       "messages not delivered {} count={} first_id={} last_id={} reason={}",
                       who(self), msgs.count, msgs.first_id, msgs.last_id, reason);
  if (ctx.trace->recording()) {
    record_fields f;
    f.what = trace::kind::dropped;
    f.message_id = msgs.first_id;
    f.last_message_id = msgs.last_id;
    f.recipient = st.agent;
    f.count = static_cast<uint32_t>(msgs.count);
    f.ts_ns = unix_nanos();
    f.reason = reason;
    ctx.trace->record(f);
  }
}

/// How long a close may take from now: timeouts.drain, but never past the
/// shutdown deadline while the server is stopping.
std::chrono::milliseconds close_grace(session_ptr self) {
  auto& ctx = *self->state.ctx;
  auto grace = ctx.cfg.drain_timeout;
  if (auto deadline = ctx.close_deadline_ns.load(std::memory_order_relaxed); deadline != 0) {
    auto now = steady::now().time_since_epoch().count();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::nanoseconds{std::max<int64_t>(0, deadline - now)});
    grace = std::min(grace, left);
  }
  return grace;
}

// -- memory budget (limits.max-buffered-bytes) ---------------------------------

/// A reader with at least this much output waiting is "behind" when the
/// server is over its memory budget (it is then treated as a slow consumer).
constexpr uint64_t budget_backlog_floor = 64 * 1024;

/// Bytes this session holds in the server: output not yet written, input
/// handed to the router and not yet credited, a partial frame.
uint64_t held_bytes(const session_state& st) {
  return st.out.pending() + st.in_flight + st.machine->buffered();
}

/// Brings this session's share of the server-wide count up to date.
void update_budget(session_ptr self) {
  auto& st = self->state;
  auto now = held_bytes(st);
  if (st.info)
    st.info->pending_bytes.set(st.out.pending());
  auto& total = st.ctx->stats.buffered_bytes;
  if (now > st.budget_share)
    total.fetch_add(now - st.budget_share, std::memory_order_relaxed);
  else if (now < st.budget_share)
    total.fetch_sub(st.budget_share - now, std::memory_order_relaxed);
  st.budget_share = now;
}

void release_budget(session_ptr self) {
  auto& st = self->state;
  st.ctx->stats.buffered_bytes.fetch_sub(st.budget_share, std::memory_order_relaxed);
  st.budget_share = 0;
}

bool over_budget(const server_context& ctx) {
  return ctx.stats.buffered_bytes.load(std::memory_order_relaxed) > ctx.cfg.max_buffered_bytes;
}

/// Logs that the budget is exceeded, at most every 10 s server-wide.
void log_over_budget(session_ptr self, std::string_view action) {
  auto& ctx = *self->state.ctx;
  auto now = steady::now().time_since_epoch().count();
  auto last = ctx.budget_logged_ns.load(std::memory_order_relaxed);
  if (last != 0 && now - last < std::chrono::nanoseconds{std::chrono::seconds{10}}.count())
    return;
  ctx.budget_logged_ns.store(now, std::memory_order_relaxed);
  ctx.log_session->warn("server buffers above limits.max-buffered-bytes buffered_bytes={} "
                        "limit={} action={} {}",
                        ctx.stats.buffered_bytes.load(std::memory_order_relaxed),
                        ctx.cfg.max_buffered_bytes, action, who(self));
}

/// Asks every session to check the budget (at most every 50 ms): readers
/// with a backlog then give it up, wherever the memory is held. Without
/// this, a stalled reader that gets no more deliveries would hold its
/// backlog while everybody else's reading stays paused.
void request_shed(session_ptr self) {
  auto& ctx = *self->state.ctx;
  auto now = steady::now().time_since_epoch().count();
  auto last = ctx.shed_requested_ns.load(std::memory_order_relaxed);
  if (last != 0 && now - last < std::chrono::nanoseconds{std::chrono::milliseconds{50}}.count())
    return;
  ctx.shed_requested_ns.store(now, std::memory_order_relaxed);
  self->send(self->state.router, shed_atom::value);
}

/// What a Summoner client is told of a frame: Notices and Goodbyes become
/// `Warning: ...` lines; nothing else has a Summoner form.
std::string summoner_line_of(const v1::Frame& f) {
  if (f.has_notice())
    return summoner::warning_line(f.notice().code(), f.notice().text());
  if (f.has_goodbye())
    return summoner::warning_line(f.goodbye().code(), f.goodbye().reason());
  return {};
}

/// The bytes of `f` as this session's peer reads them (a Convoke frame, or
/// for a Summoner connection its line, possibly none) in `scratch`.
void encode_for_peer(session_ptr self, const v1::Frame& f, std::vector<char>& scratch) {
  scratch.clear();
  if (!self->state.summoner) {
    proto::append_frame(f, scratch);
    return;
  }
  auto line = summoner_line_of(f);
  scratch.assign(line.begin(), line.end());
}

/// Writes a frame that must go out (Welcome, the final Notice or Goodbye).
void write_frame(session_ptr self, const v1::Frame& f) {
  auto& scratch = self->state.scratch;
  encode_for_peer(self, f, scratch);
  if (!scratch.empty())
    write_bytes(self, scratch.data(), scratch.size());
}

bool output_full(session_ptr self);

/// Writes a frame the server sends on its own (Notices about messages,
/// heartbeats): like deliveries, it obeys the output high-water mark, so an
/// agent that does not read cannot make the server queue them without bound.
void write_optional_frame(session_ptr self, const v1::Frame& f) {
  if (!output_full(self))
    write_frame(self, f);
}

/// Hands the envelopes collected so far to the router.
void dispatch_batch(session_ptr self) {
  auto& st = self->state;
  if (st.batch.items.empty() && st.batch.credit == 0)
    return;
  st.in_flight += st.batch.credit;
  if (!st.batch.items.empty())
    bump(st.ctx->stats.bytes_in, st.batch.frames.size());
  st.batch.session_id = st.id;
  st.batch.sender = st.agent;
  self->send(st.router, relay_atom::value, std::move(st.batch));
  st.batch = relay_batch{};
}

void release_budget(session_ptr self);

/// The session ends: it no longer counts for its principal.
void release_principal(session_ptr self) {
  auto& st = self->state;
  if (st.principal == nullptr)
    return;
  st.ctx->principals.release(*st.principal, st.id, steady::now());
  st.principal = nullptr;
  st.ctx->principals_evicted.store(st.ctx->principals.evicted(), std::memory_order_relaxed);
}

/// The end: reports what was lost and quits.
void stop_observing(session_ptr self);

void complete(session_ptr self) {
  auto& st = self->state;
  stop_observing(self);
  // An open drop episode (already counted) is traced now.
  account_dropped(self, st.dropping, drop_reason::slow_consumer, false);
  st.dropping = {};
  account_dropped(self, st.lost, st.lost_reason);
  st.lost = {};
  if (!st.agent.empty() && st.ctx->trace->recording()) {
    record_fields f;
    f.what = trace::kind::left;
    f.sender = st.agent;
    f.address = st.remote;
    f.reason = st.end_reason.empty() ? st.lost_reason : std::string_view{st.end_reason};
    f.ts_ns = unix_nanos();
    st.ctx->trace->record(f);
  }
  release_budget(self);
  release_principal(self);
  self->quit();
}

/// Tells the router to forget this session (once). Until its answer comes,
/// deliveries may still arrive; they are counted in `lost`. Closing
/// sessions leave at once, so the router stops routing to them.
void leave_router(session_ptr self) {
  auto& st = self->state;
  if (!st.registered || st.leave_requested)
    return;
  st.leave_requested = true;
  // The router outlives every session (it stops after the listener saw them
  // all end), so its answer (left_atom) comes.
  self->send(st.router, leave_atom::value, st.id);
}

/// Ends the session now. What is still unwritten is counted as dropped
/// (`reason`); the session quits once the router has forgotten it, so that
/// deliveries it routed before are counted too, not lost unseen.
void finish(session_ptr self, std::string_view reason = drop_reason::connection_closed) {
  auto& st = self->state;
  if (!machine(self).finish())
    return;
  // Never after CAF reported the connection closed: the descriptor may
  // belong to a new one by then.
  if (!st.socket_gone)
    caf_support::shut_down(socket_fd(self));
  st.lost.add(st.out.take_all());
  if (reason != drop_reason::connection_closed)
    st.lost_reason = reason;
  if (!st.registered) {
    complete(self);
    return;
  }
  leave_router(self);
}

/// Nothing is pending any more: if that was the final frame, send FIN and
/// wait for the peer's EOF.
void output_flushed(session_ptr self) {
  if (machine(self).on_output_flushed() && !self->state.socket_gone)
    caf_support::send_fin(socket_fd(self));
}

void end_drop_episode(session_ptr self);

/// Starts closing: writes `last` (a Notice or Goodbye) and, once it has left
/// the socket, half-closes (FIN) and lingers until the peer closes too. The
/// whole sequence is bounded by `grace`, after which the socket is shut.
void begin_close(session_ptr self, const v1::Frame& last, std::chrono::milliseconds grace) {
  auto& st = self->state;
  auto& m = machine(self);
  bool relaying = m.writes_messages();
  if (!m.begin_close(steady::now(), grace))
    return;
  stop_observing(self);
  if (st.end_reason.empty())
    st.end_reason = last.has_notice() ? last.notice().code() : last.goodbye().code();
  if (relaying)
    dispatch_batch(self);
  leave_router(self);
  // Read again (input is discarded now) so that the peer's EOF is seen.
  st.reads.resume(self, st.hdl);
  end_drop_episode(self); // a pending "N messages dropped" still goes first
  write_frame(self, last);
  if (st.tls) { // then close_notify; FIN follows once all of it has left
    st.tls->close();
    flush_tls(self);
  }
  arm_wake(self); // the close's deadline
  if (st.out.pending() == 0)
    output_flushed(self); // it all went out directly
}

/// In a cluster: the other nodes' client addresses, where the agent may
/// reconnect at once (docs/cluster.md, drain).
void add_reconnect_hints(session_ptr self, v1::Frame& f) {
  if (!self->state.ctx->cfg.cluster_enabled())
    return;
  for (auto& a : self->state.ctx->reconnect_hints())
    f.mutable_goodbye()->add_reconnect_to(a);
}

/// Lame duck's Goodbye, with this session's reconnect hint.
v1::Frame lame_duck_goodbye(session_ptr self) {
  auto f = make_goodbye(codes::lame_duck,
                        fmt::format("the server is going away (lame-duck mode); reconnect in "
                                    "{} ms",
                                    self->state.reconnect_after_ms));
  f.mutable_goodbye()->set_reconnect_after_ms(self->state.reconnect_after_ms);
  add_reconnect_hints(self, f);
  return f;
}

/// The shutdown's Goodbye (with the other nodes' addresses in a cluster).
v1::Frame shutdown_goodbye(session_ptr self) {
  auto f = make_goodbye(codes::shutdown, "server is shutting down");
  add_reconnect_hints(self, f);
  return f;
}

/// Protocol violation or refusal: ERROR Notice, then close.
void fail(session_ptr self, std::string_view code, std::string text,
          std::atomic<uint64_t>* counter = nullptr) {
  auto& st = self->state;
  if (machine(self).phase() >= phase::closing)
    return;
  st.ctx->log_session->warn("session refused {} code={} reason={}", who(self), code,
                            logfmt_value(text));
  if (counter != nullptr)
    bump(*counter);
  // A connection that was never admitted gets little time to read its
  // Notice (refusal_grace).
  begin_close(self, make_notice(v1::Notice::ERROR, code, std::move(text)),
              machine(self).refusal_grace(close_grace(self)));
}

void send_welcome(session_ptr self, const std::string& resume_token) {
  auto& st = self->state;
  auto& cfg = *st.cfg;
  v1::Frame f;
  auto w = f.mutable_welcome();
  w->set_protocol_version(proto::protocol_version);
  w->set_session_id(st.id);
  w->set_agent_name(st.agent);
  w->set_server_name(cfg.name);
  w->set_server_version(CONVOKE_VERSION);
  w->set_heartbeat_interval_ms(static_cast<uint32_t>(cfg.heartbeat_interval.count()));
  w->set_idle_timeout_ms(static_cast<uint32_t>(cfg.idle_timeout.count()));
  w->mutable_limits()->set_max_frame_bytes(cfg.max_frame_bytes);
  w->mutable_limits()->set_max_routes(cfg.max_routes);
  w->mutable_limits()->set_max_delivery_bytes(
    static_cast<uint32_t>(cfg.max_frame_bytes + delivery_overhead(proto::max_name_length)));
  w->set_resume_token(resume_token);
  w->add_features("list_agents");
  w->add_features("observe");
  write_frame(self, f);
}

bool admit_principal(session_ptr self);

/// Asks the router to admit the agent, once its principal (rate limits,
/// quarantine) admitted it.
void send_register(session_ptr self, register_request req) {
  auto& st = self->state;
  if (!admit_principal(self))
    return;
  st.registered = true;
  req.info = st.info;
  self->send(st.router, register_atom::value, std::move(req));
}

/// Answers a failed login at hello_at + auth.failed-login-delay, so that a
/// guesser learns nothing from the timing and gets few tries per second.
void refuse_login(session_ptr self, std::string_view code, std::string text) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  if (!std::exchange(st.login_counted, false))
    ctx.throttle.failed(st.peer_ip, steady::now());
  bump(ctx.stats.auth_failures);
  ctx.log_session->warn("login failed {} identity={} code={} reason={}", who(self),
                        logfmt_value(st.pending ? st.pending->identity : std::string{}), code,
                        logfmt_value(text));
  auto due = st.hello_at + st.cfg->failed_login_delay;
  if (due <= steady::now()) {
    fail(self, code, std::move(text));
    return;
  }
  st.refusal_code = std::string{code};
  st.refusal_text = std::move(text);
  schedule_at(self, due, auth_fail_atom::value);
}

/// The authenticator accepted the identity: check the agent name against
/// it, keep the routes it may subscribe to, and register.
void admit_identity(session_ptr self, std::shared_ptr<const identity> id) {
  auto& st = self->state;
  auto req = std::move(*st.pending);
  st.pending.reset();
  auto& r = id->rights;
  if (req.name.empty()) {
    // An identity connects under its own name unless it asks for another.
    req.name = id->name;
  }
  // Summoner connections are named by address (summoner.names), not by
  // the identity whose rights they get.
  if (!st.summoner && !id->may_use_name(req.name)) {
    bump(st.ctx->stats.permission_denied);
    fail(self, codes::permission_denied,
         fmt::format("identity '{}' may not use the agent name '{}'; its names are set by "
                     "'names' in the credentials file",
                     id->name, req.name));
    return;
  }
  std::vector<std::string> allowed;
  for (auto& route : req.routes)
    (r.may_subscribe(route) ? allowed : st.denied_routes).push_back(route);
  req.routes = std::move(allowed);
  req.restricted = !r.subscribes_everywhere();
  if (req.restricted && req.routes.empty() && st.denied_routes.empty())
    req.routes = r.subscribe; // receives what it may, never "everything"
  req.receive = r.receive;
  req.send_restricted = !r.sends_everywhere();
  bool everything
    = r.subscribes_everywhere() && r.may_publish("") && r.sends_everywhere() && r.receive;
  st.ident = std::move(id);
  st.acl = everything ? nullptr : &st.ident->rights;
  if (st.summoner)
    st.summoner_req = req; // to retry under another name
  send_register(self, std::move(req));
}

/// A valid Hello (checked by the machine): authenticate it if the server
/// has identities, then ask the router to admit the agent.
void register_agent(session_ptr self, const v1::Hello& hello) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  st.role = hello.role();
  st.sdk = hello.sdk_name().empty() ? std::string{"unknown"}
                                    : hello.sdk_name() + "/" + hello.sdk_version();
  st.info = std::make_shared<session_info>();
  st.info->session = st.id;
  st.info->address = st.remote;
  st.info->role = hello.role();
  st.info->sdk = hello.sdk_name();
  st.info->sdk_version = hello.sdk_version();
  st.info->tls = st.tls != nullptr;
  register_request req;
  req.session_id = st.id;
  req.name = hello.agent_name();
  req.role = hello.role();
  req.resume_token = hello.resume_token();
  req.routes.assign(hello.routes().begin(), hello.routes().end());
  req.remote = st.remote;
  // Read no further until the router answers: an agent that is not yet
  // admitted cannot make the server buffer its input.
  st.reads.pause(self, st.hdl);
  if (!ctx.auth && st.cfg->token.empty()) {
    send_register(self, std::move(req));
    return;
  }
  st.hello_at = steady::now();
  if (auto wait = ctx.throttle.blocked_for(st.peer_ip, st.hello_at); wait.count() > 0) {
    bump(ctx.stats.auth_throttled);
    fail(self, codes::auth_throttled,
         fmt::format("too many failed logins from {}; try again in {}", st.peer_ip,
                     format_duration(std::chrono::ceil<std::chrono::seconds>(wait))));
    return;
  }
  if (!ctx.auth) { // one shared token
    if (auto r = check_shared_token(hello, *st.cfg)) {
      st.pending = std::move(req);
      refuse_login(self, r->code, std::move(r->text));
    } else {
      send_register(self, std::move(req));
    }
    return;
  }
  req.identity = hello.identity().empty() ? hello.agent_name() : hello.identity();
  if (hello.token().empty() && !st.tls_peer_name.empty()) {
    // Mutual TLS: a client certificate verified against tls.client-ca names
    // the identity; it is the proof, so there is no token to check.
    auto id = ctx.auth->store()->find(st.tls_peer_name);
    st.pending = std::move(req);
    st.pending->identity = st.tls_peer_name;
    if (!id || (!hello.identity().empty() && hello.identity() != st.tls_peer_name)) {
      refuse_login(self, codes::auth_failed, "the identity or its token is not valid");
      return;
    }
    ctx.log_session->info("authenticated by client certificate {} identity={}", who(self),
                          logfmt_value(id->name));
    admit_identity(self, std::move(id));
    return;
  }
  if (req.identity.empty()) {
    st.pending = std::move(req);
    refuse_login(self, codes::auth_failed,
                 "this server requires an identity and its token in Hello");
    return;
  }
  st.pending = std::move(req);
  auto addr = caf::actor_cast<caf::actor_addr>(self);
  bool hashing = false;
  auto queued = ctx.auth->submit(
    st.pending->identity, hello.token(),
    [addr](authenticator::outcome res, std::shared_ptr<const identity> id) {
      if (auto session = caf::actor_cast<caf::actor>(addr))
        caf::anon_send(session, auth_atom::value,
                       auth_result{res == authenticator::outcome::accepted, std::move(id)});
    },
    &hashing);
  if (!queued) {
    fail(self, codes::server_busy,
         "too many logins are waiting to be checked; try again in a moment");
  } else if (hashing) {
    // Counted now, not when the answer is due: Hellos sent together (or
    // abandoned before their answer) would otherwise all be hashed before
    // the first failure blocks the address. Forgiven if it is accepted.
    ctx.throttle.failed(st.peer_ip, st.hello_at);
    st.login_counted = true;
  }
}

/// A Summoner connection has no Hello: it registers at once, under the
/// operator's name for its address (summoner.names) or summoner@ip:port,
/// without subscriptions (it receives every broadcast, as Summoner clients
/// always did). With auth.credentials it gets summoner.identity's rights.
void register_summoner(session_ptr self, const std::string& ip, uint16_t port) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  st.role = "summoner";
  st.sdk = "summoner";
  st.info = std::make_shared<session_info>();
  st.info->session = st.id;
  st.info->address = st.remote;
  st.info->role = st.role;
  st.info->sdk = "summoner";
  register_request req;
  req.session_id = st.id;
  req.name = summoner_name_for(*st.cfg, ip, port);
  if (req.name.empty())
    req.name = summoner::default_name(ip, port);
  req.role = st.role;
  req.remote = st.remote;
  // Reading is not paused here: CAF 0.17 never resumes a connection
  // halted before its first read. take_bytes pauses it instead, if bytes
  // come before the router's answer.
  if (ctx.auth) {
    auto id = ctx.auth->store()->find(st.cfg->summoner_identity);
    if (!id) {
      fail(self, codes::auth_failed,
           fmt::format("summoner.identity '{}' is not in the credentials file; Summoner "
                       "connections are refused",
                       st.cfg->summoner_identity));
      return;
    }
    st.pending = std::move(req);
    admit_identity(self, std::move(id));
    return;
  }
  st.summoner_req = req;
  send_register(self, std::move(req));
}

/// A Summoner connection's name is taken (several connections from one
/// address with an operator's name): register again as name-2 ... name-9,
/// then as name-<port>, which no other connection from that address can
/// hold. (Convoke agents cannot take these names: check_hello.)
constexpr int max_summoner_name_tries = 10;

bool retry_summoner_name(session_ptr self) {
  auto& st = self->state;
  if (!st.summoner || machine(self).phase() != phase::awaiting_registration
      || ++st.summoner_names_tried >= max_summoner_name_tries)
    return false;
  auto req = st.summoner_req;
  if (st.summoner_names_tried < max_summoner_name_tries - 1)
    req.name += fmt::format("-{}", st.summoner_names_tried + 1);
  else
    req.name += fmt::format("-{}", self->remote_port(st.hdl));
  req.info = st.info;
  st.registered = true;
  self->send(st.router, register_atom::value, std::move(req));
  return true;
}

/// Writes a Notice about one of the agent's frames, at most 20 a second (a
/// flood of bad frames costs a bounded number of Notices); the rest are
/// counted and summarised once per second (notices_suppressed). `seq` is the
/// frame's client_seq, if any, for the summary. False if it was suppressed.
bool write_limited_notice(session_ptr self, const v1::Frame& notice, uint64_t seq) {
  auto& st = self->state;
  if (st.notices.allow(notice_limiter::clock::now())) {
    write_optional_frame(self, notice);
    return true;
  }
  if (st.notices.suppress(seq))
    schedule(self, notice_limiter::window, flush_notices_atom::value);
  return false;
}

// -- rate limits and quarantine (limits.*, rate_limits.hpp) ----------------------

/// The principal whose rate limits and quarantine this session shares with
/// its other connections: the authenticated identity, else the peer's IP
/// address without the port, so that a new connection (a new port) does not
/// escape a quarantine. Computed here only.
std::string principal_of(session_ptr self) {
  auto& st = self->state;
  // Summoner connections share summoner.identity's rights, not its limits;
  // their rate limits and quarantine are their address's, apart from the
  // Convoke agents there (a Summoner client's flood must not lock out the
  // Convoke agents of its host).
  if (st.summoner)
    return "summoner:" + st.peer_ip;
  return st.ident ? "identity:" + st.ident->name : "addr:" + st.peer_ip;
}

/// The rate limits of this session's principal: the server-wide [limits]
/// keys, with the identity's own rates from the credentials file where it
/// sets them (a burst of one second's worth; for bytes at least
/// limits.max-frame-bytes). A principal takes the settings of its newest
/// session.
rate_limit_settings limits_for(session_ptr self) {
  auto& st = self->state;
  auto s = rate_limit_settings::from_config(*st.cfg);
  if (!st.ident)
    return s;
  auto& own = st.ident->limits;
  if (own.messages_per_second > 0) {
    s.messages_per_second = static_cast<double>(own.messages_per_second);
    s.messages_burst = s.messages_per_second;
  }
  if (own.bytes_per_second > 0) {
    s.bytes_per_second = static_cast<double>(own.bytes_per_second);
    s.bytes_burst = std::max(s.bytes_per_second, static_cast<double>(st.cfg->max_frame_bytes));
  }
  return s;
}

/// Closes the session because its principal is quarantined for `left`
/// more: ERROR Notice `quarantined` with the time left (retry_after_ms).
void close_quarantined(session_ptr self, std::chrono::milliseconds left) {
  if (machine(self).phase() >= phase::closing)
    return;
  auto f = make_notice(v1::Notice::ERROR, codes::quarantined,
                       fmt::format("{} is quarantined for another {} after repeated rate limit "
                                   "breaches (limits.quarantine-after); connections are refused "
                                   "until then",
                                   principal_of(self), format_duration(left)));
  f.mutable_notice()->set_retry_after_ms(static_cast<uint64_t>(left.count()));
  begin_close(self, f, machine(self).refusal_grace(close_grace(self)));
}

/// A valid Hello: the session joins its principal (ctx.principals), or is
/// refused with the time left if the principal is quarantined.
bool admit_principal(session_ptr self) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  auto a = ctx.principals.admit(principal_of(self), limits_for(self), st.id, steady::now());
  if (a.entry == nullptr) {
    bump(ctx.stats.quarantine_refused);
    ctx.log_session->info("session refused {} code=quarantined principal={} left_ms={}", who(self),
                          logfmt_value(principal_of(self)), a.quarantine_left.count());
    close_quarantined(self, a.quarantine_left);
    return false;
  }
  st.principal = a.entry;
  st.rate_limited = a.entry->settings.limited();
  return true;
}

/// This session's envelope started its principal's quarantine: every
/// session of the principal is closed, the others through the listener
/// (which knows them by id).
void start_quarantine(session_ptr self, std::chrono::milliseconds left) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  bump(ctx.stats.quarantines);
  ctx.log_session->warn("principal quarantined principal={} for_ms={} sessions={} {}",
                        logfmt_value(principal_of(self)), left.count(),
                        st.principal->sessions.size(), who(self));
  for (auto sid : st.principal->sessions)
    if (sid != st.id)
      self->send(st.listener, quarantine_atom::value, sid, static_cast<int64_t>(left.count()));
  close_quarantined(self, left);
}

/// Takes one message of `bytes` from the principal's buckets: true if it is
/// within the limits. Otherwise it is counted, `d` says which limit, and a
/// quarantine (which ends the session) is already acted upon.
bool take_rate(session_ptr self, size_t bytes, rate_decision& d) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  d = ctx.principals.take(*st.principal, bytes, steady::now());
  if (d.what == rate_decision::verdict::pass)
    return true;
  bump(ctx.stats.rate_limited);
  if (d.what == rate_decision::verdict::quarantined) {
    if (d.quarantine_started)
      start_quarantine(self, d.retry_after);
    else
      close_quarantined(self, d.retry_after);
  }
  return false;
}

/// Takes one envelope from the principal's buckets. False: over a limit or
/// quarantined, so it is not relayed; counted, traced, and the sender gets a
/// rate_limited Notice (rate-limited itself) with retry_after_ms.
bool within_rate(session_ptr self, const envelope_view& view) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  rate_decision d;
  if (take_rate(self, view.envelope.size(), d))
    return true;
  if (d.what == rate_decision::verdict::quarantined)
    return false;
  auto& lim = st.principal->settings;
  bool messages = d.limit == limit_kind::messages;
  if (d.breach)
    ctx.log_session->warn("rate limit exceeded {} principal={} limit={} retry_after_ms={} "
                          "breaches={}",
                          who(self), logfmt_value(principal_of(self)),
                          messages ? "limits.messages-per-second" : "limits.bytes-per-second",
                          d.retry_after.count(), st.principal->breaches);
  auto text
    = messages
        ? fmt::format("{} is over its rate limit of {} messages per second (burst {}, "
                      "limits.messages-per-second); the message was not relayed; retry after {} ms",
                      principal_of(self), lim.messages_per_second, lim.messages_burst,
                      d.retry_after.count())
        : fmt::format("{} is over its rate limit of {} per second (burst {}, "
                      "limits.bytes-per-second); the message ({} bytes) was not relayed; retry "
                      "after {} ms",
                      principal_of(self), format_size(static_cast<uint64_t>(lim.bytes_per_second)),
                      format_size(static_cast<uint64_t>(lim.bytes_burst)), view.envelope.size(),
                      d.retry_after.count());
  auto f = make_notice(v1::Notice::WARNING, codes::rate_limited, std::move(text), view.client_seq,
                       0, view.request_id);
  f.mutable_notice()->set_retry_after_ms(static_cast<uint64_t>(d.retry_after.count()));
  if (!write_limited_notice(self, f, view.client_seq)) {
    ++st.rate_limited_untraced; // in the summary record (flush_notices)
    return false;
  }
  if (ctx.trace->recording()) {
    record_fields f;
    f.what = trace::kind::undeliverable;
    f.sender = st.agent;
    f.recipient = view.recipient;
    f.route = view.route;
    f.payload_bytes = static_cast<uint32_t>(view.payload.size());
    f.sent_ns = view.sent_ns;
    f.ts_ns = f.accepted_ns = unix_nanos();
    f.request_id = view.request_id;
    f.in_reply_to = view.in_reply_to;
    trace_ids(view, f);
    f.reason = codes::rate_limited;
    ctx.trace->record(f);
  }
  return false;
}

/// Checks an envelope against the identity's rights (publish on its route,
/// or send to its recipient). A denied one gets a Notice naming the action
/// and the route or recipient, and a `rejected` trace record; the session
/// goes on. A reply (`in_reply_to`) to a recipient outside the `send` right
/// passes with `needs_grant`: the router relays it if the recipient sent
/// this agent that request.
bool permitted(session_ptr self, const envelope_view& view, bool& needs_grant) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  auto& r = *st.acl;
  bool direct = !view.recipient.empty();
  if (direct ? r.may_send(view.recipient) : r.may_publish(view.route))
    return true;
  if (direct && view.in_reply_to != 0) {
    needs_grant = true;
    return true;
  }
  bump(ctx.stats.permission_denied);
  auto id = ctx.next_message_id.fetch_add(1, std::memory_order_relaxed);
  auto text
    = direct ? fmt::format("identity '{}' may not send direct messages to '{}' (right: send); "
                           "the message was not relayed",
                           st.ident->name, view.recipient)
      : view.route.empty()
        ? fmt::format("identity '{}' may not broadcast without a route (that needs the right to "
                      "publish on every route, '>'); the message was not relayed",
                      st.ident->name)
        : fmt::format("identity '{}' may not publish on route '{}' (right: publish); the message "
                      "was not relayed",
                      st.ident->name, view.route);
  write_limited_notice(self,
                       make_notice(v1::Notice::WARNING, codes::permission_denied, std::move(text),
                                   view.client_seq, id, view.request_id),
                       view.client_seq);
  if (ctx.trace->recording()) {
    record_fields f;
    f.what = trace::kind::rejected;
    f.message_id = id;
    f.sender = st.agent;
    f.recipient = view.recipient;
    f.route = view.route.substr(0, proto::max_route_length);
    f.payload_bytes = static_cast<uint32_t>(view.payload.size());
    f.sent_ns = view.sent_ns;
    f.ts_ns = f.accepted_ns = unix_nanos();
    f.request_id = view.request_id;
    f.in_reply_to = view.in_reply_to;
    trace_ids(view, f);
    f.reason = drop_reason::permission_denied;
    ctx.trace->record(f);
  }
  return false;
}

/// The Notice text for subscriptions an identity may not have.
std::string denied_subscription(session_ptr self, const std::vector<std::string>& routes) {
  auto& st = self->state;
  std::string list;
  for (auto& r : routes)
    list += fmt::format("{}'{}'", list.empty() ? "" : ", ", r);
  return fmt::format("identity '{}' may not subscribe to {} (right: subscribe); not subscribed",
                     st.ident->name, list);
}

/// Queues one envelope for the router: `view` holds its fields and bytes
/// (from scan_envelope_frame, pointing into the sender's frame as received). Both paths end up
/// with the stamped frame in the batch and recipient/route as offsets into it.
void relay_envelope(session_ptr self, const envelope_view& view) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  if (st.rate_limited && !within_rate(self, view))
    return;
  if (view.summoner_remote_addr && !st.summoner) {
    // Summoner receivers take it for the sender's address: only the server
    // sets it, for Summoner connections' lines.
    bump(ctx.stats.rejected);
    write_limited_notice(
      self,
      make_notice(v1::Notice::WARNING, codes::permission_denied,
                  fmt::format("the header '{}' is set by the server for messages from Summoner "
                              "connections; the message was not relayed",
                              summoner::header_remote_addr),
                  view.client_seq, 0, view.request_id),
      view.client_seq);
    return;
  }
  if (auto r = check_addressing(view.recipient, view.route)) {
    bump(ctx.stats.rejected);
    write_limited_notice(self,
                         make_notice(v1::Notice::WARNING, r->code,
                                     r->text + "; the message was not relayed", view.client_seq, 0,
                                     view.request_id),
                         view.client_seq);
    return;
  }
  bool needs_grant = false;
  if (st.acl != nullptr && !permitted(self, view, needs_grant))
    return;
  auto id = ctx.next_message_id.fetch_add(1, std::memory_order_relaxed);
  auto now = unix_nanos();
  auto& frames = st.batch.frames;
  relay_item item;
  item.offset = static_cast<uint32_t>(frames.size());
  auto envelope_at = append_delivery_frame(frames, view.envelope, id, st.agent, now);
  item.size = static_cast<uint32_t>(frames.size() - item.offset);
  auto offset_of = [&](std::string_view field) {
    return field.empty()
             ? 0u
             : static_cast<uint32_t>(envelope_at + (field.data() - view.envelope.data()));
  };
  item.recipient = {offset_of(view.recipient), static_cast<uint32_t>(view.recipient.size())};
  item.route = {offset_of(view.route), static_cast<uint32_t>(view.route.size())};
  item.message_id = id;
  item.client_seq = view.client_seq;
  item.request_id = view.request_id;
  item.in_reply_to = view.in_reply_to;
  item.needs_grant = needs_grant;
  item.payload_bytes = static_cast<uint32_t>(view.payload.size());
  item.sent_ns = view.sent_ns;
  item.relayed_ns = now;
  if (ctx.trace->recording()) {
    record_fields ids;
    trace_ids(view, ids);
    item.trace_id.assign(ids.trace_id); // W3C ids are 16 bytes; never more than 32
    item.span_id.assign(ids.span_id);
    // As much as the trace file quotes, or an observer asked for (and may
    // see); the writer cuts the file's copy to trace.payload-bytes.
    if (auto cap = std::max<uint64_t>(st.cfg->trace_payload_bytes, ctx.tap->payload_bytes_wanted());
        cap > 0) {
      item.payload_excerpt = view.payload.substr(0, cap);
      item.payload_truncated = view.payload.size() > cap;
    }
  }
  st.batch.items.push_back(std::move(item));
  bump(ctx.stats.messages_in);
  st.info->in_msgs.add();
  st.info->in_bytes.add(view.envelope.size());
  ctx.registry.message_bytes.observe(view.envelope.size());
}

/// Slow path: an envelope the fast scanner did not take (e.g. several
/// envelope fields in one frame), already parsed by the machine. Re-encode it
/// canonically, then relay that like any other. Unknown fields travel on the
/// fast path only.
void relay_parsed_envelope(session_ptr self) {
  auto& st = self->state;
  auto& frame = machine(self).frame();
  // Unknown fields may hold what the fast path refuses (groups, known fields
  // with another wire type, which protobuf keeps as unknown): drop them, so
  // the canonical encoding is plain known fields.
  // Not Message::DiscardUnknownFields(): its reflection walk over the
  // headers map crashed (SEGV in RepeatedPtrField::Clear, protobuf 3.21,
  // seen under ThreadSanitizer with a map of ~570 entries). Envelope has no
  // nested messages besides that map, whose entries keep no unknown fields.
  auto clear_unknown
    = [](google::protobuf::Message& m) { m.GetReflection()->MutableUnknownFields(&m)->Clear(); };
  clear_unknown(frame);
  clear_unknown(*frame.mutable_envelope());
  st.reencoded.clear();
  proto::append_frame(frame, st.reencoded);
  std::string_view body{st.reencoded.data() + proto::header_size,
                        st.reencoded.size() - proto::header_size};
  // The canonical encoding can be larger than what was sent (protobuf writes
  // both key and value of every map entry): past the frame limit it would
  // reach receivers above the max_delivery_bytes they were promised.
  if (body.size() > st.cfg->max_frame_bytes) {
    bump(st.ctx->stats.rejected);
    auto& env = frame.envelope();
    write_limited_notice(
      self,
      make_notice(v1::Notice::WARNING, proto::codes::message_too_large,
                  fmt::format("the envelope takes {} bytes written canonically, more than "
                              "limits.max-frame-bytes ({}); the message was not relayed",
                              body.size(), st.cfg->max_frame_bytes),
                  env.client_seq(), 0, env.request_id()),
      env.client_seq());
    trim(st.reencoded);
    return;
  }
  envelope_view view;
  if (!scan_envelope_frame(body, view)) { // cannot happen for our own encoding
    fail(self, proto::codes::frame_undecodable, "the envelope could not be re-encoded",
         &st.ctx->stats.protocol_errors);
    return;
  }
  relay_envelope(self, view);
  trim(st.reencoded);
}

void on_subscription(session_ptr self, bool subscribe,
                     google::protobuf::RepeatedPtrField<std::string>* routes) {
  auto& st = self->state;
  if (auto r = check_routes(*routes)) {
    write_limited_notice(
      self,
      make_notice(v1::Notice::WARNING, r->code, r->text + "; the subscription change was ignored"),
      0);
    return;
  }
  // Keep the order of envelopes and subscription changes.
  dispatch_batch(self);
  std::vector<std::string> xs;
  std::vector<std::string> denied;
  for (auto& r : *routes)
    (!subscribe || st.acl == nullptr || st.acl->may_subscribe(r) ? xs : denied).push_back(r);
  if (!denied.empty()) {
    bump(st.ctx->stats.permission_denied, denied.size());
    write_limited_notice(
      self,
      make_notice(v1::Notice::WARNING, codes::permission_denied, denied_subscription(self, denied)),
      0);
  }
  if (xs.empty())
    return;
  if (subscribe)
    self->send(st.router, subscribe_atom::value, st.id, std::move(xs));
  else
    self->send(st.router, unsubscribe_atom::value, st.id, std::move(xs));
}

/// Most names in one AgentList (a ListAgents may ask for fewer).
constexpr uint32_t max_listed_agents = 1000;

/// A ListAgents takes one message (and its bytes) from the principal's
/// buckets, like an envelope. False: it is answered with a rate_limited
/// Notice carrying its request_id instead (or the principal is quarantined).
bool list_within_rate(session_ptr self, const v1::ListAgents& req) {
  auto& st = self->state;
  rate_decision d;
  if (take_rate(self, req.ByteSizeLong(), d))
    return true;
  if (d.what == rate_decision::verdict::quarantined)
    return false;
  auto f = make_notice(
    v1::Notice::WARNING, codes::rate_limited,
    fmt::format("{} is over its rate limit ({}); the ListAgents request was not answered; retry "
                "after {} ms",
                principal_of(self),
                d.limit == limit_kind::messages ? "limits.messages-per-second"
                                                : "limits.bytes-per-second",
                d.retry_after.count()),
    0, 0, req.request_id());
  f.mutable_notice()->set_retry_after_ms(static_cast<uint64_t>(d.retry_after.count()));
  if (!write_limited_notice(self, f, 0))
    ++st.rate_limited_untraced;
  return false;
}

/// ListAgents: the router answers after everything this agent sent before
/// (its mailbox is FIFO per sender), so Notices about earlier frames come
/// first. The limit is capped; a prefix or `after` longer than any name is
/// cut to one byte more than a name can have, which lists the same names.
void list_agents(session_ptr self, const v1::ListAgents& req) {
  auto& st = self->state;
  if (st.rate_limited && !list_within_rate(self, req))
    return;
  dispatch_batch(self);
  list_request r;
  r.request_id = req.request_id();
  r.limit = req.limit() == 0 ? max_listed_agents : std::min(req.limit(), max_listed_agents);
  r.prefix = req.prefix().substr(0, proto::max_name_length + 1);
  r.after = req.after().substr(0, proto::max_name_length + 1);
  if (st.acl != nullptr && !st.acl->sends_everywhere())
    r.only_sendable = st.ident;
  self->send(st.router, list_atom::value, std::move(r));
}

/// The router's answer to a ListAgents: an AgentList frame, cut (truncated)
/// where it would exceed limits.max-frame-bytes, the size the agent was
/// promised. Like Notices, it obeys the output high-water mark.
void write_agent_list(session_ptr self, uint64_t request_id, std::vector<std::string>& names,
                      bool truncated) {
  auto& st = self->state;
  if (!machine(self).writes_messages())
    return;
  v1::Frame f;
  auto& list = *f.mutable_agent_list();
  list.set_request_id(request_id);
  // The limit this agent was promised in its Welcome (its session's
  // configuration snapshot; a reload does not change it).
  auto limit = st.cfg->max_frame_bytes;
  size_t room = limit > 64 ? limit - 64 : 0;
  size_t size = 0;
  for (auto& n : names) {
    size += 2 + n.size(); // tag, length (names are < 128 bytes), bytes
    if (size > room) {
      truncated = true;
      break;
    }
    list.add_agents(std::move(n));
  }
  list.set_truncated(truncated);
  write_optional_frame(self, f);
}

// -- observing traces (Observe, feature "observe") -------------------------------

/// Stops this session's observation, if any (idempotent).
void stop_observing(session_ptr self) {
  auto& st = self->state;
  if (*st.tap_id == 0)
    return;
  st.ctx->tap->unsubscribe(std::exchange(*st.tap_id, 0));
  st.tap_sub.reset();
  st.observe_request = 0;
  st.tap_missed = 0;
  st.tap_waiting = false;
  st.ctx->log_session->info("observer stopped {}", who(self));
}

/// What this agent may observe: its identity's right, else
/// trace.anonymous-observe (its session's configuration snapshot).
observe_level observe_right(session_ptr self) {
  auto& st = self->state;
  if (st.ident)
    return st.ident->rights.observe;
  auto& v = st.cfg->trace_anonymous_observe;
  return v == "payload" ? observe_level::payload
         : v == "none"  ? observe_level::none
                        : observe_level::metadata;
}

void observe_refused(session_ptr self, uint64_t request_id, std::string_view code,
                     std::string text) {
  auto& st = self->state;
  st.ctx->log_session->info("observe refused {} code={} reason={}", who(self), code,
                            logfmt_value(text));
  write_optional_frame(self,
                       make_notice(v1::Notice::WARNING, code, std::move(text), 0, 0, request_id));
}

/// Observe: check the right and the filter, then (re)subscribe to the tap
/// and acknowledge with an empty TraceEvents. Errors are WARNING Notices
/// with the request id; the connection stays.
void observe(session_ptr self, const v1::Observe& o) {
  auto& st = self->state;
  if (o.stop()) {
    stop_observing(self);
    return;
  }
  auto right = observe_right(self);
  if (right == observe_level::none) {
    bump(st.ctx->stats.permission_denied);
    observe_refused(self, o.request_id(), codes::permission_denied,
                    st.ident ? fmt::format("identity '{}' may not observe traces (its observe "
                                           "right is \"none\")",
                                           st.ident->name)
                             : std::string{"agents without an identity may not observe traces "
                                           "here (trace.anonymous-observe is \"none\")"});
    return;
  }
  if (o.request_id() == 0) {
    observe_refused(self, 0, codes::invalid_filter, "Observe.request_id must not be 0");
    return;
  }
  tap_filter_spec spec;
  spec.agents.assign(o.agents().begin(), o.agents().end());
  spec.routes.assign(o.routes().begin(), o.routes().end());
  spec.trace_id = o.trace_id();
  spec.events.assign(o.events().begin(), o.events().end());
  // Payloads only with the right (silently none otherwise: the sizes are
  // still there), and never more than fits a frame.
  spec.payload_bytes = right == observe_level::payload
                         ? std::min<uint32_t>(o.payload_bytes(), st.cfg->max_frame_bytes / 2)
                         : 0;
  auto filter = parse_tap_filter(spec);
  if (!filter) {
    observe_refused(self, o.request_id(), codes::invalid_filter, filter.error().text);
    return;
  }
  stop_observing(self); // a new Observe replaces the filter
  auto sub = std::make_shared<session_tap>(caf::weak_actor_ptr{self->ctrl()});
  auto id = st.ctx->tap->subscribe(std::move(*filter), sub);
  if (!id) {
    observe_refused(self, o.request_id(), codes::too_many_observers, id.error().text);
    return;
  }
  *st.tap_id = *id;
  st.tap_sub = std::move(sub);
  st.observe_request = o.request_id();
  st.ctx->log_session->info("observer started {} request_id={} agents={} routes={} events={} "
                            "payload_bytes={}",
                            who(self), o.request_id(), o.agents_size(), o.routes_size(),
                            o.events_size(), spec.payload_bytes);
  v1::Frame ack;
  ack.mutable_trace_events()->set_request_id(o.request_id());
  write_optional_frame(self, ack);
}

/// The output is back under half its high-water mark: the tap may deliver
/// to this observer again.
void tap_output_drained(session_ptr self) {
  auto& st = self->state;
  if (!st.tap_waiting || st.out.pending() > st.cfg->output_high_water / 2)
    return;
  st.tap_waiting = false;
  if (st.tap_sub)
    st.tap_sub->busy.store(false, std::memory_order_release);
}

/// A batch from the tap: TraceEvents frames, each within
/// limits.max-frame-bytes (the first carries `missed`). Above half the
/// output high-water mark the batch is dropped and counted instead, so
/// trace frames never make this agent a slow consumer of its messages.
void write_trace_events(session_ptr self, tap_batch& b) {
  auto& st = self->state;
  if (!st.tap_sub || b.from != st.tap_sub.get())
    return; // a stopped or replaced observation
  auto half = st.cfg->output_high_water / 2;
  if (!machine(self).writes_messages() || st.out.pending() > half) {
    st.tap_missed += b.missed + b.events.size();
    st.ctx->tap->count_missed(b.events.size());
    st.tap_waiting = true; // busy until the output drains
    tap_output_drained(self);
    return;
  }
  auto limit = static_cast<size_t>(st.cfg->max_frame_bytes);
  v1::Frame f;
  auto& out = *f.mutable_trace_events();
  out.set_request_id(st.observe_request);
  out.set_missed(b.missed + std::exchange(st.tap_missed, 0));
  size_t size = 32;
  auto flush = [&] {
    write_frame(self, f);
    out.clear_events();
    out.set_missed(0);
    size = 32;
  };
  for (auto& ev : b.events) {
    // An event alone never exceeds the frame limit: its payload is cut.
    if (ev.payload.size() + 1024 > limit) {
      ev.payload.resize(limit > 2048 ? limit - 2048 : 0);
      ev.payload_truncated = true;
    }
    v1::TraceEvent te;
    proto::to_wire(ev, te);
    auto n = te.ByteSizeLong() + 8;
    if (size + n > limit && out.events_size() > 0)
      flush();
    *out.add_events() = std::move(te);
    size += n;
  }
  if (out.events_size() > 0 || out.missed() > 0)
    flush();
  if (st.out.pending() > half)
    st.tap_waiting = true;
  else
    st.tap_sub->busy.store(false, std::memory_order_release);
}

/// A Summoner line that is not relayed (invalid UTF-8, too long): a
/// Warning to its sender (rate-limited like every Notice about input),
/// counted and traced as `rejected`; the connection stays.
void summoner_line_refused(session_ptr self, const session_refusal& r, size_t bytes) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  bump(ctx.stats.rejected);
  // A refused line is still a message: it takes its tokens, so a flood of
  // bad lines meets the rate limits and quarantine like any other.
  rate_decision d;
  if (st.rate_limited && !take_rate(self, bytes, d))
    return; // counted; a quarantine already closes the session
  ctx.log_session->debug("summoner line refused {} code={}", who(self), r.code);
  // Traced only when told (at most 20 a second): the rest are summarised.
  if (!write_limited_notice(self, make_notice(v1::Notice::WARNING, r.code, r.text), 0))
    return;
  if (ctx.trace->recording()) {
    record_fields f;
    f.what = trace::kind::rejected;
    f.message_id = ctx.next_message_id.fetch_add(1, std::memory_order_relaxed);
    f.sender = st.agent;
    f.route = st.cfg->summoner_route;
    f.ts_ns = f.accepted_ns = unix_nanos();
    f.reason = r.code;
    ctx.trace->record(f);
  }
}

/// Performs what the buffered input asks for, frame by frame (see
/// input_action), until the machine needs more bytes or takes no more.
void take_input(session_ptr self) {
  auto& st = self->state;
  auto& m = machine(self);
  for (;;) {
    switch (m.next()) {
    case input_action::none:
      arm_wake(self); // an incomplete frame's deadline
      return;
    case input_action::relay:
      relay_envelope(self, m.envelope());
      break;
    case input_action::relay_parsed:
      relay_parsed_envelope(self);
      break;
    case input_action::register_agent:
      register_agent(self, m.frame().hello());
      break;
    case input_action::ping:
      // A ping is a barrier: answer once the router has handled everything
      // read before it (so Notices about those messages come first).
      dispatch_batch(self);
      self->send(st.router, barrier_atom::value, m.ping_seq());
      break;
    case input_action::subscribe:
      on_subscription(self, true, m.frame().mutable_subscribe()->mutable_routes());
      break;
    case input_action::unsubscribe:
      on_subscription(self, false, m.frame().mutable_unsubscribe()->mutable_routes());
      break;
    case input_action::list_agents:
      list_agents(self, m.frame().list_agents());
      break;
    case input_action::observe:
      observe(self, m.frame().observe());
      break;
    case input_action::goodbye:
      // Relaying stopped. Acknowledge only once the router has handled what
      // this agent sent before, so that Notices about it (e.g. an unknown
      // recipient) still reach the agent ahead of the Goodbye.
      st.ctx->log_session->info("agent leaving {} reason={}", who(self),
                                logfmt_value(m.frame().goodbye().reason()));
      dispatch_batch(self);
      self->send(st.router, barrier_atom::value, uint64_t{0}); // 0: the Goodbye barrier
      break;
    case input_action::refuse: {
      auto& r = m.refusal();
      fail(self, r.code, std::move(r.text),
           r.protocol_error ? &st.ctx->stats.protocol_errors : nullptr);
      break;
    }
    case input_action::warn:
      summoner_line_refused(self, m.refusal(), m.refused_bytes());
      break;
    }
  }
}

/// Stops reading when too much of this agent's input is waiting in the
/// router (TCP backpressure then reaches the sender), or while the server is
/// above limits.max-buffered-bytes.
void check_input_window(session_ptr self) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  if (st.reads.paused() || !machine(self).takes_input())
    return;
  // Only the router backlog counts toward the window: a partial frame in the
  // splitter is bounded by limits.max-frame-bytes (and timeouts.frame).
  bool window_full = st.in_flight > st.cfg->input_window;
  bool over = !window_full && over_budget(ctx);
  if (over)
    request_shed(self); // readers with a backlog give theirs up
  // Above the budget, only a session growing a large partial frame stops
  // reading (it is what holds input memory); everybody else reads on.
  bool budget_full = over && machine(self).buffered() >= budget_backlog_floor;
  if (!window_full && !budget_full)
    return;
  st.reads.pause(self, st.hdl);
  if (window_full) {
    bump(ctx.stats.input_pauses);
    return;
  }
  st.budget_paused = true;
  bump(ctx.stats.budget_pauses);
  log_over_budget(self, "pause_reading");
  if (!st.budget_retry_armed) {
    st.budget_retry_armed = true;
    delayed_self_send(self, budget_retry_delay, budget_retry_atom::value);
  }
}

void resume_input(session_ptr self) {
  auto& st = self->state;
  if (!st.reads.paused() || !machine(self).takes_input())
    return;
  if (st.in_flight > st.cfg->input_window / 2)
    return; // the router's credit resumes it
  if (st.budget_paused && over_budget(*st.ctx)) {
    if (!st.budget_retry_armed) { // check again shortly
      st.budget_retry_armed = true;
      delayed_self_send(self, budget_retry_delay, budget_retry_atom::value);
    }
    return;
  }
  st.budget_paused = false;
  st.reads.resume(self, st.hdl);
}

/// True if the agent's TCP stack acknowledged at least 1 KiB of output
/// since the last call (bytes the socket took minus what the kernel still
/// holds unsent). Such an agent takes what it is sent and counts as alive
/// even if it sends nothing: e.g. a slow reader whose heartbeats wait behind
/// a long queue. Heartbeats alone (a few bytes) stay below the threshold, so
/// a silent agent is still closed by timeouts.idle.
bool reading_what_it_is_sent(session_ptr self) {
  auto& st = self->state;
  int unsent = 0;
  if (st.socket_gone || ::ioctl(socket_fd(self), SIOCOUTQ, &unsent) != 0 || unsent < 0)
    return false;
  auto acked
    = st.written_total - std::min<uint64_t>(st.written_total, static_cast<uint64_t>(unsent));
  bool progress = acked >= st.acked_seen + 1024;
  if (progress || acked < st.acked_seen)
    st.acked_seen = acked;
  return progress;
}

/// A wake-up the machine asked for: performs what its deadlines decide.
void on_wake(session_ptr self) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  auto& m = machine(self);
  auto now = steady::now();
  peer_sample sample;
  if (m.wants_peer_sample(now)) {
    // Progress through queued output is sampled at every heartbeat, so that
    // the idle check has a recent baseline.
    sample.input_paused = st.reads.paused();
    sample.reading_output = reading_what_it_is_sent(self);
  }
  auto t = m.on_timer(now, sample);
  switch (t.expired) {
  case expiry::none:
    break;
  case expiry::handshake:
    bump(ctx.stats.timeouts);
    if (st.tls && !st.tls->handshake_done()) {
      // The Notice cannot be sent without the handshake: FIN only.
      bump(ctx.stats.tls_failures);
      ctx.log_session->info("tls handshake timeout {} handshake_timeout={}", who(self),
                            format_duration(st.cfg->handshake_timeout));
    }
    fail(self, codes::handshake_timeout,
         fmt::format("no Hello within {} (timeouts.handshake)",
                     format_duration(st.cfg->handshake_timeout)));
    break;
  case expiry::frame:
    if (st.budget_paused) {
      // Not the sender's fault: the server stopped reading it.
      bump(ctx.stats.budget_exceeded);
      fail(self, codes::server_busy,
           fmt::format("the server is at its memory limit (limits.max-buffered-bytes is {}) "
                       "and could not take the rest of your {}-byte frame within {}; retry "
                       "later",
                       format_size(ctx.cfg.max_buffered_bytes), m.buffered(),
                       format_duration(st.cfg->frame_timeout)));
      break;
    }
    bump(ctx.stats.timeouts);
    fail(self, codes::frame_timeout,
         fmt::format("a {} started {} ago is still incomplete ({} bytes of it received); "
                     "{}s must arrive within {} (timeouts.frame)",
                     st.summoner ? "line" : "frame", format_duration(t.elapsed), m.buffered(),
                     st.summoner ? "line" : "frame", format_duration(st.cfg->frame_timeout)));
    break;
  case expiry::idle:
    bump(ctx.stats.timeouts);
    ctx.log_session->info("idle timeout {} silent_ms={}", who(self), t.elapsed.count());
    begin_close(self,
                make_notice(v1::Notice::ERROR, codes::idle_timeout,
                            fmt::format("nothing received for {} (timeouts.idle); "
                                        "answer heartbeats to stay connected",
                                        format_duration(st.cfg->idle_timeout))),
                close_grace(self));
    break;
  case expiry::close: {
    if (m.phase() == phase::closing)
      ctx.log_session->info("closing forcibly {} reason=\"peer did not read its final "
                            "frame in time\"",
                            who(self));
    bool stopping = ctx.close_deadline_ns.load(std::memory_order_relaxed) != 0;
    finish(self, stopping ? drop_reason::shutdown : drop_reason::connection_closed);
    break;
  }
  }
  if (t.heartbeat_seq != 0) {
    v1::Frame f;
    f.mutable_heartbeat()->set_unix_nanos(unix_nanos());
    f.mutable_heartbeat()->set_seq(t.heartbeat_seq);
    write_optional_frame(self, f);
  }
  arm_wake(self);
}

// -- output: slow consumers --------------------------------------------------

/// Writes `f` ahead of the output CAF has not started writing yet (it
/// overtakes the backlog), or at the end if that cannot be done exactly.
void write_ahead(session_ptr self, const v1::Frame& f) {
  auto& st = self->state;
  if (st.tls) {
    // TLS records are sequenced: nothing can overtake ciphertext already
    // queued. The frame goes at the end.
    write_frame(self, f);
    return;
  }
  auto& offline = self->wr_buf(st.hdl); // CAF's buffer of what it has not started to write
  auto& scratch = st.scratch;
  encode_for_peer(self, f, scratch);
  if (scratch.empty())
    return;
  if (offline.empty() || !st.out.insert_before_newest(offline.size(), scratch.size())) {
    write_bytes(self, scratch.data(), scratch.size());
    return;
  }
  offline.insert(offline.begin(), scratch.begin(), scratch.end());
  self->flush(st.hdl);
}

/// Gives up the output CAF has not started writing yet (a consumer being
/// disconnected): those messages are lost for it, and counted.
void discard_backlog(session_ptr self) {
  auto& st = self->state;
  // TLS: removing records from the middle of the stream would break it for
  // the peer; the backlog stays and the close deadline bounds it.
  if (st.tls)
    return;
  auto& offline = self->wr_buf(st.hdl);
  if (offline.empty() || st.out.newest_runs_within(offline.size()) != offline.size())
    return;
  st.lost.add(st.out.drop_newest(offline.size()));
  offline.clear();
  offline.shrink_to_fit();
}

/// Ends a drop episode (the consumer caught up: its output is back under
/// half the high-water mark) and tells it what it missed, if anything.
void end_drop_episode(session_ptr self) {
  auto& st = self->state;
  st.drop_episode = false;
  auto& d = st.dropping;
  if (d.count == 0)
    return;
  st.ctx->log_session->warn("slow consumer caught up {} dropped={} first_id={} last_id={}",
                            who(self), d.count, d.first_id, d.last_id);
  account_dropped(self, d, drop_reason::slow_consumer, false); // trace record; counted already
  write_frame(self,
              make_notice(v1::Notice::WARNING, codes::messages_dropped,
                          fmt::format("{} messages to you (ids {} to {}) were dropped because "
                                      "your connection was not reading fast enough",
                                      d.count, d.first_id, d.last_id)));
  d = {};
}

/// Applies the slow consumer policy to this agent. Under `disconnect` the
/// session ends with a slow_consumer Notice that overtakes the backlog;
/// under `drop` a drop episode begins (a WARNING Notice ahead of the
/// backlog; deliveries are discarded until it catches up). With `for_budget`
/// (the server is above limits.max-buffered-bytes), the backlog CAF has not
/// started to write is given up as well, to free memory now.
void slow_consumer(session_ptr self, bool for_budget) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  auto pending = st.out.pending();
  auto why = !for_budget
               ? fmt::format("{} bytes are waiting for you (flow.output-high-water is {})", pending,
                             format_size(st.cfg->output_high_water))
               : fmt::format("{} bytes are waiting for you while the server is at its memory "
                             "limit (limits.max-buffered-bytes is {})",
                             pending, format_size(ctx.cfg.max_buffered_bytes));
  if (for_budget) {
    bump(ctx.stats.budget_exceeded);
    log_over_budget(self, st.cfg->slow_consumer == slow_consumer_policy::disconnect
                            ? "disconnect_slow_consumer"
                            : "drop_for_slow_consumer");
  }
  if (st.cfg->slow_consumer == slow_consumer_policy::disconnect) {
    bump(ctx.stats.slow_consumers);
    st.lost_reason = drop_reason::slow_consumer;
    ctx.log_session->warn("slow consumer disconnected {} pending_bytes={} high_water={}{}",
                          who(self), pending, st.cfg->output_high_water,
                          for_budget ? " reason=max-buffered-bytes" : "");
    discard_backlog(self);
    begin_close(
      self,
      make_notice(v1::Notice::ERROR, codes::slow_consumer,
                  fmt::format("your connection is not reading fast enough: {}; closing", why)),
      close_grace(self));
    update_budget(self);
    return;
  }
  // One WARNING and one log line per episode, however many frames are
  // dropped during it (an agent that never reads and keeps pinging must not
  // make the server work per frame).
  bool starting = !st.drop_episode;
  st.drop_episode = true;
  if (starting)
    ctx.log_session->warn("slow consumer: dropping messages {} pending_bytes={} high_water={}{}",
                          who(self), pending, st.cfg->output_high_water,
                          for_budget ? " reason=max-buffered-bytes" : "");
  if (for_budget && !st.tls) { // (ciphertext cannot be cut, see discard_backlog)
    auto& offline = self->wr_buf(st.hdl);
    if (!offline.empty() && st.out.newest_runs_within(offline.size()) == offline.size()) {
      auto given_up = st.out.drop_newest(offline.size());
      offline.clear();
      offline.shrink_to_fit();
      st.dropping.add(given_up);
      bump(ctx.stats.dropped, given_up.count);
      st.info->dropped.add(given_up.count);
    }
  }
  if (starting)
    write_ahead(self, make_notice(v1::Notice::WARNING, codes::slow_consumer,
                                  fmt::format("messages to you are being dropped because your "
                                              "connection is not reading fast enough: {}; a "
                                              "messages_dropped Notice will say how many once "
                                              "you have caught up",
                                              why)));
  update_budget(self);
}

/// True if output for this agent must not be written now: above
/// flow.output-high-water, or behind (a backlog of 64 KiB or more) while
/// the server is above limits.max-buffered-bytes. Applies the slow consumer
/// policy the first time.
bool output_full(session_ptr self) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  auto pending = st.out.pending();
  if (st.drop_episode) {
    // Hysteresis: an episode lasts until the backlog is under half the mark.
    if (pending > st.cfg->output_high_water / 2)
      return true;
    end_drop_episode(self);
  }
  bool over_mark = pending >= st.cfg->output_high_water;
  bool budget = !over_mark && over_budget(ctx);
  bool behind = budget && pending >= budget_backlog_floor;
  if (budget && !behind)
    request_shed(self); // someone else holds the memory
  if (!over_mark && !behind)
    return false;
  if (machine(self).phase() >= phase::closing)
    return true;
  slow_consumer(self, behind);
  return true;
}

/// Relay lines for a delivery, and what render_deliveries made of it.
struct rendered_lines : summoner::render_result {
  std::string_view lines_view;
};

/// The relay lines of a delivery for a Summoner receiver. The router sends
/// one shared buffer to every receiver of a broadcast, and every session
/// runs on this thread: the lines are rendered once per buffer, not once
/// per receiver. A buffer is known by its address, size and message ids:
/// two live buffers never share an address, and a buffer allocated later
/// at a freed one's address holds later messages (ids only grow).
const rendered_lines& summoner_lines(session_ptr self, const delivery& d) {
  struct cache {
    const char* data = nullptr;
    size_t size = 0;
    uint64_t first = 0;
    uint64_t last = 0;
    uint32_t count = 0;
    uint64_t max_line = 0;
    std::string out;
    std::string scratch;
    rendered_lines result;
  };
  thread_local cache c;
  auto max_line = self->state.cfg->summoner_max_line_bytes;
  if (c.data == d.frames.data() && c.size == d.frames.size() && c.first == d.first_id
      && c.last == d.last_id && c.count == d.count && c.max_line == max_line)
    return c.result;
  // Not for a large run's size forever (the next one re-renders anyway).
  trim(c.out);
  trim(c.scratch);
  c.out.clear();
  static_cast<summoner::render_result&>(c.result)
    = summoner::render_deliveries({d.frames.data(), d.frames.size()}, max_line, c.out, c.scratch);
  c.result.lines_view = c.out;
  c.data = d.frames.data();
  c.size = d.frames.size();
  c.first = d.first_id;
  c.last = d.last_id;
  c.count = d.count;
  c.max_line = max_line;
  return c.result;
}

/// Delivers pre-encoded frames, applying the slow consumer policy.
void deliver(session_ptr self, const delivery& d) {
  auto& st = self->state;
  message_range msgs{d.count, d.first_id, d.last_id};
  if (!machine(self).writes_messages()) {
    // Closing: the router had routed these before it learned of the close.
    st.lost.add(msgs);
    return;
  }
  if (output_full(self)) {
    if (machine(self).phase() >= phase::closing) { // disconnected as a slow consumer
      st.lost.add(msgs);
      return;
    }
    st.dropping.add(msgs); // drop policy
    bump(st.ctx->stats.dropped, msgs.count);
    st.info->dropped.add(msgs.count);
    return;
  }
  end_drop_episode(self);
  auto& ctx = *st.ctx;
  std::string_view bytes{d.frames.data(), d.frames.size()};
  if (st.summoner) {
    auto& r = summoner_lines(self, d);
    if (r.too_large > 0)
      account_dropped(self, {r.too_large, r.first_too_large, r.last_too_large},
                      drop_reason::too_large);
    if (r.malformed > 0)
      ctx.log_session->error("summoner rendering skipped frames {} count={}", who(self),
                             r.malformed);
    msgs.count -= std::min<uint64_t>(msgs.count, r.too_large + r.malformed);
    bytes = r.lines_view;
  }
  if (!bytes.empty())
    write_bytes(self, bytes.data(), bytes.size(), msgs);
  auto written = bytes.size();
  update_budget(self);
  if (!d.written.empty() && ctx.trace->recording()) {
    record_fields f;
    f.what = trace::kind::written;
    f.recipient = st.agent;
    f.ts_ns = unix_nanos();
    for (auto& m : d.written) {
      f.message_id = m.message_id;
      f.accepted_ns = m.accepted_ns;
      f.trace_id = m.trace_id.view();
      ctx.trace->record(f);
    }
  }
  bump(ctx.stats.bytes_out, written);
  st.info->out_msgs.add(msgs.count);
  st.info->out_bytes.add(written);
  if (auto waited = unix_nanos() - d.relayed_ns; d.relayed_ns != 0)
    ctx.registry.relay_latency_ns.observe(static_cast<uint64_t>(std::max<int64_t>(0, waited)));
}

/// Bytes from the peer (plaintext, decrypted if TLS); `read_size` is the
/// size of the socket read they came from.
void take_bytes(session_ptr self, const char* data, size_t size, size_t read_size) {
  auto& st = self->state;
  auto& m = machine(self);
  auto now = steady::now();
  if (!m.on_bytes(data, size, now))
    return; // input after the decision to close is discarded
  if (st.info)
    st.info->touch(now);
  st.batch.credit += size;
  if (read_size == st.read_chunk && st.read_chunk < large_read_chunk && m.welcomed()) {
    // A busy sender: read in larger chunks from now on. Only once
    // admitted: after a Hello the session halts reading, but CAF 0.17
    // may still do the rest of its read loop (up to
    // middleman.max-consecutive-reads) in that event, so small chunks
    // keep what an unadmitted peer can make us buffer small.
    st.read_chunk = large_read_chunk;
    self->configure_read(st.hdl, caf::io::receive_policy::at_most(st.read_chunk));
  }
  take_input(self);
  if (m.phase() == phase::established)
    dispatch_batch(self);
  else if (st.summoner && m.phase() == phase::awaiting_registration)
    st.reads.pause(self, st.hdl); // nothing more until it is admitted (Welcome resumes)
  update_budget(self);
  check_input_window(self);
}

/// TLS: a socket read. The first byte must start a TLS handshake; records
/// go through the channel, its answers go out, and the plaintext goes on
/// to take_bytes. A TLS failure closes this session only.
void tls_input(session_ptr self, const char* data, size_t size) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  if (size == 0 || machine(self).phase() >= phase::closing)
    return; // input after the decision to close is discarded
  if (st.tls_bytes_in == 0 && !tls::starts_handshake(static_cast<unsigned char>(data[0]))) {
    // Plaintext (a Convoke client without TLS, or anything else): say so in
    // plaintext, the only plaintext this port sends, and close.
    bump(ctx.stats.tls_failures);
    // At most 8 bytes: enough to tell a Convoke frame from HTTP and the like,
    // and short of any Hello.token (the earliest it starts is byte 8).
    ctx.log_session->warn("not tls on a tls port {} first_bytes={}", who(self),
                          logfmt_value(proto::printable({data, size}, 8)));
    st.tls.reset();
    fail(self, codes::tls_required,
         "this server accepts TLS connections only (connect with tls://host:port)");
    return;
  }
  st.tls_bytes_in += size;
  auto& ch = *st.tls;
  bool was_done = ch.handshake_done();
  auto& plain = st.tls_in;
  plain.clear();
  auto ok = ch.feed(data, size, plain);
  if (!ok)
    bump(ctx.stats.tls_failures); // counted before the peer can see the alert
  flush_tls(self);                // handshake messages, or the alert that explains a failure
  if (!ok) {
    ctx.log_session->warn("tls failed {} {} code={} reason={}", who(self),
                          was_done ? "after_handshake" : "during_handshake",
                          tls::error_category().name(), logfmt_value(ok.error().text));
    // The Notice goes nowhere (the channel is dead; its code is for the
    // log only); the alert that explains the failure went out.
    fail(self, "tls_failed", "TLS failed: " + ok.error().text);
    return;
  }
  if (!was_done && ch.handshake_done()) {
    st.tls_peer_name = ch.peer_name();
    ctx.log_session->info("tls established {} version={} peer={}", who(self),
                          logfmt_value(ch.description()), logfmt_value(st.tls_peer_name));
  }
  if (!plain.empty())
    take_bytes(self, plain.data(), plain.size(), size);
  trim(plain);
}

} // namespace

namespace {

caf::behavior session_actor(caf::io::stateful_broker<session_state>* self,
                            caf::io::connection_handle hdl, caf::actor listener, caf::actor router,
                            context_ptr ctx, uint64_t session_id, std::string peer_ip,
                            std::string refusal, bool summoner) {
  auto& st = self->state;
  st.ctx = ctx;
  st.hdl = hdl;
  st.listener = std::move(listener);
  st.router = std::move(router);
  st.id = session_id;
  st.peer_ip = std::move(peer_ip);
  st.remote = fmt::format("{}:{}", self->remote_addr(hdl), self->remote_port(hdl));
  st.cfg = ctx->config(); // reloads (SIGHUP) apply to sessions that start later
  st.summoner = summoner;
  auto peer_port = self->remote_port(hdl);
  auto peer_host = self->remote_addr(hdl);
  // An IPv4 peer of a dual-stack socket: Summoner servers show it as IPv4.
  if (peer_host.rfind("::ffff:", 0) == 0 && peer_host.find('.') != std::string::npos)
    peer_host.erase(0, 7);
  if (summoner)
    st.machine.emplace(*st.cfg, steady::now(),
                       summoner_peer{summoner::remote_addr(peer_host, peer_port)});
  else
    st.machine.emplace(*st.cfg, steady::now());
  // Summoner clients speak plain TCP only (summoner.listen is loopback or
  // --allow-plaintext).
  if (auto tls_ctx = ctx->tls_context(); tls_ctx && !summoner) // the context of this moment
    st.tls = std::make_unique<tls::channel>(std::move(tls_ctx));
  bump(ctx->stats.connections_total);
  bump(ctx->stats.connections_open);
  self->attach_functor([ctx, session_id, tap_id = st.tap_id](const caf::error&) {
    ctx->stats.connections_open.fetch_sub(1, std::memory_order_relaxed);
    ctx->registry.remove(session_id);
    if (*tap_id != 0) // however the session ended, it observes no more
      ctx->tap->unsubscribe(*tap_id);
  });
  ctx->log_session->debug("connection accepted {} fd={}", who(self), socket_fd(self));
  self->configure_read(hdl, caf::io::receive_policy::at_most(st.read_chunk));
  self->ack_writes(hdl, true); // keeps the output ledger exact, see write_bytes()
  arm_wake(self);              // the handshake deadline
  if (!refusal.empty()) {
    // Over limits.max-connections-per-address: the listener counted and
    // logs it (not one log line per connection of a flood).
    begin_close(self, make_notice(v1::Notice::ERROR, codes::too_many_connections, refusal),
                machine(self).refusal_grace(close_grace(self)));
  } else if (summoner) {
    register_summoner(self, peer_host, peer_port);
  }
  self->set_exit_handler([self](const caf::exit_msg& msg) {
    // Forced stop (not the graceful drain): close now, count what is lost.
    auto& st = self->state;
    if (!st.socket_gone)
      caf_support::shut_down(socket_fd(self));
    st.lost.add(st.out.take_all());
    account_dropped(self, st.lost, drop_reason::shutdown);
    release_budget(self);
    release_principal(self);
    self->quit(msg.reason);
  });
  return {
    [self](const caf::io::new_data_msg& msg) {
      if (self->state.tls)
        tls_input(self, msg.buf.data(), msg.buf.size());
      else
        take_bytes(self, msg.buf.data(), msg.buf.size(), msg.buf.size());
    },
    [self](wake_atom) { on_wake(self); },
    [self](const caf::io::connection_closed_msg&) {
      auto& st = self->state;
      auto& m = machine(self);
      // The peer may have only half-closed: shut our side too, or CAF keeps
      // the socket (and any unsent output) after this actor is gone. Now,
      // while the descriptor is certainly still this connection's, and
      // never again later.
      if (!st.socket_gone)
        caf_support::shut_down(socket_fd(self));
      st.socket_gone = true;
      if (m.phase() == phase::closed)
        return;
      if (st.summoner && m.phase() == phase::awaiting_registration && st.registered) {
        // Lines sent just before closing still go out once admitted (as
        // Summoner servers relay them); see the welcome.
        st.summoner_eof = true;
        return;
      }
      if (m.phase() < phase::closing) {
        st.ctx->log_session->info("connection closed by peer {}", who(self));
        if (m.phase() == phase::established) {
          if (st.summoner) { // a last line without '\n' is relayed
            m.on_eof(steady::now());
            take_input(self);
          }
          dispatch_batch(self);
        }
      }
      finish(self);
    },
    [self](const caf::io::data_transferred_msg& msg) {
      auto& st = self->state;
      st.out.written(msg.written);
      st.written_total += msg.written;
      if (st.out.pending() == 0) {
        release_write_buffer(self);
        output_flushed(self); // the final frame, if any, has left
      }
      tap_output_drained(self);
      // Caught up after a drop episode: say what was missed, now, not with
      // the next delivery (which may never come).
      if (st.drop_episode && machine(self).phase() < phase::closing
          && st.out.pending() <= st.cfg->output_high_water / 2)
        end_drop_episode(self);
      update_budget(self);
    },
    [self](shed_atom) {
      auto& st = self->state;
      if (machine(self).writes_messages() && over_budget(*st.ctx)
          && st.out.pending() >= budget_backlog_floor)
        slow_consumer(self, true);
    },
    [self](left_atom) {
      // The router forgot this session: nothing more is routed to it.
      auto& st = self->state;
      st.registered = false;
      if (machine(self).phase() == phase::closed)
        complete(self);
    },
    [self](flush_notices_atom) {
      auto& st = self->state;
      auto s = st.notices.take();
      if (auto n = std::exchange(st.rate_limited_untraced, 0);
          n > 0 && st.ctx->trace->recording()) {
        record_fields f; // one record for the rate_limited Notices not sent
        f.what = trace::kind::undeliverable;
        f.sender = st.agent;
        f.count = static_cast<uint32_t>(n);
        f.ts_ns = unix_nanos();
        f.reason = codes::rate_limited;
        st.ctx->trace->record(f);
      }
      if (s.count == 0 || !machine(self).writes_messages())
        return;
      auto text = st.summoner
                    ? fmt::format("{} more of your lines were not relayed (invalid, too long or "
                                  "over a rate limit); their Warnings were not sent (at most {} "
                                  "per second are)",
                                  s.count, static_cast<int>(notice_limiter::per_second))
                    : fmt::format("{} more of your frames (client_seq {} to {}, 0 for "
                                  "subscriptions) had an invalid recipient or route, or "
                                  "went over a rate limit, and were ignored; their Notices "
                                  "were not sent (at most {} per second are)",
                                  s.count, s.first_id, s.last_id,
                                  static_cast<int>(notice_limiter::per_second));
      write_optional_frame(
        self, make_notice(v1::Notice::WARNING, codes::notices_suppressed, std::move(text)));
    },
    [self](quarantine_atom, int64_t left_ms) {
      // Another session of this principal started its quarantine.
      close_quarantined(self, std::chrono::milliseconds{left_ms});
    },
    [self](budget_retry_atom) {
      self->state.budget_retry_armed = false;
      resume_input(self);
    },
    [self](auth_atom, auth_result& res) {
      auto& st = self->state;
      if (!st.pending || machine(self).phase() >= phase::closing)
        return; // e.g. the handshake deadline passed while it was checked
      if (res.accepted) {
        if (std::exchange(st.login_counted, false))
          st.ctx->throttle.forgive(st.peer_ip);
        admit_identity(self, std::move(res.id));
      } else
        refuse_login(self, codes::auth_failed, "the identity or its token is not valid");
    },
    [self](auth_fail_atom) {
      auto& st = self->state;
      fail(self, st.refusal_code, std::move(st.refusal_text));
    },
    [self](welcome_atom, const std::string& name, const std::string& resume_token) {
      auto& st = self->state;
      if (!machine(self).on_welcome(steady::now()))
        return;
      st.agent = name;
      st.info->name = name;
      st.info->identity = st.ident ? st.ident->name : std::string{};
      st.info->connected_since = std::chrono::system_clock::now();
      st.info->touch(steady::now());
      st.ctx->registry.add(st.info);                     // its fields are final from here on
      self->send(st.listener, hello_atom::value, st.id); // admitted: no longer handshaking
      send_welcome(self, resume_token);
      st.ctx->log_session->info("agent connected {} remote={} role={} sdk={} identity={}",
                                who(self), st.remote, logfmt_value(st.role), logfmt_value(st.sdk),
                                logfmt_value(st.ident ? st.ident->name : std::string{}));
      if (st.ctx->trace->recording()) {
        record_fields f;
        f.what = trace::kind::joined;
        f.sender = st.agent;
        f.address = st.remote;
        if (st.ident)
          f.identity = st.ident->name;
        f.ts_ns = unix_nanos();
        st.ctx->trace->record(f);
      }
      if (!st.denied_routes.empty()) {
        bump(st.ctx->stats.permission_denied, st.denied_routes.size());
        write_optional_frame(self, make_notice(v1::Notice::WARNING, codes::permission_denied,
                                               denied_subscription(self, st.denied_routes)));
        st.denied_routes.clear();
      }
      // Admitted: frames that arrived behind the Hello, then read on. (This
      // also arms the heartbeat and idle deadlines.)
      if (st.summoner_eof) // it sent its lines and closed before this
        machine(self).on_eof(steady::now());
      take_input(self);
      dispatch_batch(self);
      if (st.summoner_eof) {
        st.ctx->log_session->info("connection closed by peer {}", who(self));
        finish(self);
        return;
      }
      resume_input(self);
    },
    [self](refuse_atom, const notice_request& n) {
      self->state.registered = false; // the router did not add this session
      if (n.code == codes::name_taken && retry_summoner_name(self))
        return;
      if (self->state.summoner_eof) { // nobody is left to tell
        finish(self);
        return;
      }
      fail(self, n.code, n.text);
    },
    [self](credit_atom, uint64_t bytes) {
      auto& st = self->state;
      st.in_flight -= std::min(st.in_flight, bytes);
      update_budget(self);
      resume_input(self);
    },
    [self](retrigger_atom) { self->state.reads.on_retrigger(self, self->state.hdl); },
    [self](deliver_atom, const delivery& d) { deliver(self, d); },
    [self](tap_atom, tap_batch& b) { write_trace_events(self, b); },
    [self](agent_list_atom, uint64_t request_id, std::vector<std::string>& names, bool truncated) {
      write_agent_list(self, request_id, names, truncated);
    },
    [self](barrier_atom, uint64_t seq) {
      auto& m = machine(self);
      if (seq == 0) { // the agent's Goodbye
        if (m.on_goodbye_acknowledged())
          begin_close(self, make_goodbye(codes::client_exit, "goodbye acknowledged"),
                      close_grace(self));
        return;
      }
      if (!m.writes_messages())
        return;
      v1::Frame reply;
      reply.mutable_heartbeat()->set_unix_nanos(unix_nanos());
      reply.mutable_heartbeat()->set_reply_to(seq);
      write_optional_frame(self, reply);
    },
    [self](notice_atom, const notice_request& n) {
      if (machine(self).writes_messages())
        write_optional_frame(self,
                             make_notice(static_cast<v1::Notice::Severity>(n.severity), n.code,
                                         n.text, n.client_seq, n.message_id, n.request_id));
    },
    [self](busy_atom) {
      // Too many connections are not admitted yet and this is the oldest:
      // make room now (Notice, then close without lingering). Also one that
      // is already closing after a refusal (it still holds a descriptor).
      auto& st = self->state;
      switch (machine(self).on_busy()) {
      case busy_action::ignore:
        return;
      case busy_action::refuse_and_finish:
        fail(self, codes::server_busy,
             fmt::format("too many connections are waiting to be admitted "
                         "(limits.max-handshakes is {}); this one waited longest",
                         st.ctx->config()->max_handshakes));
        [[fallthrough]];
      case busy_action::finish:
        finish(self); // the Notice went out at once or not at all
      }
    },
    [self](drain_atom) {
      // Shutdown, phase 1: stop reading; tell the router once everything read
      // so far is in its mailbox (messages are FIFO per sender pair). Every
      // phase reports "drained": a session that is closing or not yet
      // admitted has nothing more to hand to the router, and must not make
      // the well-behaved agents wait for their Goodbye. One that is saying
      // Goodbye is closed by its barrier, after any Notices the router still
      // has for it.
      auto& st = self->state;
      switch (machine(self).on_drain(steady::now(), close_grace(self))) {
      case drain_action::close:
        begin_close(self, shutdown_goodbye(self), close_grace(self));
        break;
      case drain_action::stop_reading:
        dispatch_batch(self);
        st.reads.pause(self, st.hdl);
        break;
      case drain_action::none:
        arm_wake(self); // a close now ends by the drain's deadline
        break;
      }
      self->send(st.router, drained_atom::value, st.id);
    },
    [self](goodbye_atom) {
      // Shutdown, phase 2: everything routed before this has been queued.
      begin_close(self, shutdown_goodbye(self), close_grace(self));
    },
    [self](lame_duck_atom, uint64_t reconnect_after_ms) {
      // Lame duck, this session's turn: as the shutdown's drain, but for
      // this session alone. Stop reading, hand what was read to the
      // router, and let it confirm (lame_bye) once that is routed and the
      // session is forgotten; then Goodbye(lame_duck), as in phase 2.
      auto& st = self->state;
      st.reconnect_after_ms = reconnect_after_ms;
      switch (machine(self).on_drain(steady::now(), close_grace(self))) {
      case drain_action::close:
        begin_close(self, lame_duck_goodbye(self), close_grace(self));
        break;
      case drain_action::stop_reading:
        dispatch_batch(self);
        st.reads.pause(self, st.hdl);
        self->send(st.router, lame_duck_atom::value, st.id);
        break;
      case drain_action::none:
        break; // closing already (it leaves the router on its own)
      }
    },
    [self](lame_bye_atom) {
      auto& st = self->state;
      st.registered = false; // the router already forgot this session
      begin_close(self, lame_duck_goodbye(self), close_grace(self));
    },
    [self](evict_atom) {
      auto& st = self->state;
      st.registered = false; // the router already forgot this session
      st.ctx->log_session->info("agent replaced by a new session {}", who(self));
      begin_close(self,
                  make_goodbye(codes::replaced,
                               "a new connection took over this agent name with the "
                               "resume token"),
                  close_grace(self));
    },
    [self](evict_atom, const std::string& code, std::string& text) {
      // Cluster: another node's claim on this agent name won.
      auto& st = self->state;
      st.registered = false; // the router already forgot this session
      st.ctx->log_session->info("agent name lost to another node {} code={}", who(self), code);
      begin_close(self, make_goodbye(code, std::move(text)), close_grace(self));
    },
  };
}

} // namespace

caf::actor fork_session(caf::io::broker* listener_broker, caf::io::connection_handle hdl,
                        caf::actor listener, caf::actor router, context_ptr ctx,
                        uint64_t session_id, std::string peer_ip, std::string refusal,
                        bool summoner) {
  return listener_broker->fork(session_actor, hdl, std::move(listener), std::move(router),
                               std::move(ctx), session_id, std::move(peer_ip), std::move(refusal),
                               summoner);
}

} // namespace convoke::server::internal
