#pragma once

// Messages exchanged by the server's actors (listener, router, sessions).
// Included only by the CAF translation units of the server. All of these
// actors are brokers on CAF's multiplexer thread, so these messages never
// leave the process and, except `auth_result` (sent by the authenticator's
// worker thread), never cross a thread: the types are whitelisted as
// local-only ("unsafe") message types.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "caf/all.hpp"
#include "caf/io/all.hpp"

#include "context.hpp"

namespace convoke::server::internal {

// session -> router
using register_atom = caf::atom_constant<caf::atom("register")>;
using relay_atom = caf::atom_constant<caf::atom("relay")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using unsubscribe_atom = caf::atom_constant<caf::atom("unsubscr")>;
using drained_atom = caf::atom_constant<caf::atom("drained")>;
/// The session is closed; the router forgets it and answers left_atom.
using leave_atom = caf::atom_constant<caf::atom("leave")>;
/// Echoed by the router: everything the session sent before has been routed.
using barrier_atom = caf::atom_constant<caf::atom("barrier")>;
/// (list_atom, list_request): which agents are connected (ListAgents); the
/// router answers (agent_list_atom, request id, names, truncated).
using list_atom = caf::atom_constant<caf::atom("listagents")>;
// router -> session
using welcome_atom = caf::atom_constant<caf::atom("welcome")>;
using refuse_atom = caf::atom_constant<caf::atom("refuse")>;
using deliver_atom = caf::atom_constant<caf::atom("deliver")>;
using credit_atom = caf::atom_constant<caf::atom("credit")>;
using notice_atom = caf::atom_constant<caf::atom("notice")>;
using evict_atom = caf::atom_constant<caf::atom("evict")>;
using goodbye_atom = caf::atom_constant<caf::atom("goodbye")>;
using left_atom = caf::atom_constant<caf::atom("left")>;
using agent_list_atom = caf::atom_constant<caf::atom("agentlist")>;
// acceptor thread -> listener: a new connection's socket
using accepted_atom = caf::atom_constant<caf::atom("accepted")>;
/// A socket from the Summoner compatibility listener (summoner.listen).
using summoner_accepted_atom = caf::atom_constant<caf::atom("saccepted")>;
// session -> listener: the agent was admitted (Welcome); no longer handshaking
using hello_atom = caf::atom_constant<caf::atom("hello")>;
// listener -> session: too many connections are handshaking; close
using busy_atom = caf::atom_constant<caf::atom("busy")>;
// server -> listener -> router/sessions
using drain_atom = caf::atom_constant<caf::atom("drain")>;
// listener -> router, once every session has ended during a shutdown
using stop_atom = caf::atom_constant<caf::atom("stop")>;
// session -> listener: (timer_atom, session id, atom_value, due ns)
using timer_atom = caf::atom_constant<caf::atom("timer")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
// timers (a session's through the listener, others self-sends)
/// A session's deadline may be due: it asks its session_machine.
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using budget_retry_atom = caf::atom_constant<caf::atom("budgetchk")>;
/// End of a Notice rate-limit window (router: per sender; session: own).
using flush_notices_atom = caf::atom_constant<caf::atom("flushnote")>;
/// session -> router -> every session: the server is above
/// limits.max-buffered-bytes; readers with a backlog give it up.
using shed_atom = caf::atom_constant<caf::atom("shed")>;
using drain_deadline_atom = caf::atom_constant<caf::atom("draindl")>;
/// Lame-duck mode. server -> router: (lame_duck_atom, listener) starts it;
/// router -> session: (lame_duck_atom, reconnect hint ms) asks it to close;
/// session -> router: (lame_duck_atom, session id) once it stopped reading
/// and everything it read is in the router's mailbox.
using lame_duck_atom = caf::atom_constant<caf::atom("lameduck")>;
/// The router's lame-duck timer.
using lame_tick_atom = caf::atom_constant<caf::atom("lametick")>;
/// router -> session: forgotten; everything routed to it was sent before
/// this: say Goodbye(lame_duck) and close.
using lame_bye_atom = caf::atom_constant<caf::atom("lamebye")>;
/// authenticator -> session: the answer for its Hello's identity and token.
using auth_atom = caf::atom_constant<caf::atom("auth")>;
/// A failed login's delayed answer is due.
using auth_fail_atom = caf::atom_constant<caf::atom("authfail")>;
/// session -> listener: (quarantine_atom, session id, ms left): another
/// session of the principal must close; listener -> that session:
/// (quarantine_atom, ms left).
using quarantine_atom = caf::atom_constant<caf::atom("quarantin")>;

/// server (watchdog) -> router: a sign of life of the relay thread; the
/// router counts it in server_context::relay_answers.
using alive_atom = caf::atom_constant<caf::atom("alive")>;
// trace writer thread -> session: a batch of trace events for its observer
using tap_atom = caf::atom_constant<caf::atom("tapbatch")>;

/// A session asks the router to register an agent after a valid Hello.
struct register_request {
  uint64_t session_id = 0;
  std::string name; // empty: the router assigns one
  std::string role;
  std::string resume_token;
  std::vector<std::string> routes;
  std::string remote;
  /// The identity to authenticate as (auth.credentials), for logs.
  std::string identity;
  /// Its rights restrict subscriptions: never "every broadcast".
  bool restricted = false;
  /// It may receive direct messages.
  bool receive = true;
  /// Its `send` right is restricted: requests it receives grant it a reply.
  bool send_restricted = false;
  /// The admin listener's view of the agent: the router keeps its routes.
  session_info_ptr info;
};

/// A session's ListAgents, checked and capped.
struct list_request {
  uint64_t request_id = 0;
  std::string prefix;
  std::string after;
  uint32_t limit = 0;
  /// The asker's identity when its `send` right is restricted: only names
  /// it may send to are listed. Null: every name.
  std::shared_ptr<const identity> only_sendable;
};

/// The authenticator's answer to a session (from its worker thread).
struct auth_result {
  bool accepted = false;
  std::shared_ptr<const identity> id;
};

/// A byte range inside relay_batch::frames.
struct slice {
  uint32_t offset = 0;
  uint32_t size = 0;
  std::string_view in(const std::vector<char>& buf) const {
    return size == 0 ? std::string_view{} : std::string_view{buf.data() + offset, size};
  }
  bool empty() const noexcept {
    return size == 0;
  }
};

/// A few bytes kept inline (trace and span ids): no allocation per message.
template <size_t N>
struct inline_bytes {
  uint8_t size = 0;
  char data[N];

  void assign(std::string_view s) noexcept {
    size = static_cast<uint8_t>(s.size() < N ? s.size() : N);
    if (size > 0) // an empty view's data() may be null
      std::memcpy(data, s.data(), size);
  }
  std::string_view view() const noexcept {
    return {data, size};
  }
};

/// A message whose writing to a receiver's socket is traced (trace.written).
struct written_mark {
  uint64_t message_id = 0;
  int64_t accepted_ns = 0;
  inline_bytes<32> trace_id;
};

/// One envelope inside a relay batch.
struct relay_item {
  uint32_t offset = 0; // of the length-prefixed frame in relay_batch::frames
  uint32_t size = 0;
  slice recipient; // empty: broadcast
  slice route;
  uint64_t message_id = 0;
  uint64_t client_seq = 0;
  uint64_t request_id = 0;
  uint64_t in_reply_to = 0;
  /// A reply the sender's `send` right does not cover: the router relays it
  /// only if the recipient sent the sender that request (reply grants).
  bool needs_grant = false;
  uint32_t payload_bytes = 0;
  int64_t sent_ns = 0;
  int64_t relayed_ns = 0;
  // Only when recording traces:
  inline_bytes<32> trace_id;   // the envelope's, or the traceparent header's
  inline_bytes<8> span_id;     // the traceparent header's parent-id
  std::string payload_excerpt; // only when tracing payloads
  bool payload_truncated = false;
};

/// Envelopes read from one socket read, already stamped and encoded.
struct relay_batch {
  uint64_t session_id = 0;
  std::string sender;
  std::vector<char> frames;
  std::vector<relay_item> items;
  /// Input bytes this batch accounts for (returned as credit).
  uint64_t credit = 0;
};

/// Encoded frames for one receiver; shared (copy-on-write) when several
/// receivers get the same bytes.
struct delivery {
  std::vector<char> frames;
  /// When the first message was stamped (unix ns), for the relay latency.
  int64_t relayed_ns = 0;
  uint32_t count = 0;
  uint64_t first_id = 0;
  uint64_t last_id = 0;
  /// trace.written: the messages among them whose writing is traced.
  std::vector<written_mark> written;
};

/// A Notice the router wants a session to send to its agent.
struct notice_request {
  int severity = 0;
  std::string code;
  std::string text;
  uint64_t client_seq = 0;
  uint64_t message_id = 0;
  uint64_t request_id = 0;
};

/// Spawns the router broker.
caf::actor spawn_router(caf::actor_system& sys, context_ptr ctx);

/// Spawns the listener broker; it forks one session broker per socket the
/// acceptor thread hands it (accepted_atom).
/// It also runs the sessions' timers: (timer_atom, session id, what, due)
/// sends `what` to that session at `due` if it is still running.
caf::actor spawn_listener(caf::actor_system& sys, caf::actor router, context_ptr ctx);

/// Forks a session broker for the connection `hdl` of `listener_broker`
/// from `peer_ip`. A non-empty `refusal` (over
/// limits.max-connections-per-address) makes it close at once with a
/// too_many_connections Notice saying that. With `summoner`, the
/// connection speaks the Summoner protocol (docs/summoner.md).
caf::actor fork_session(caf::io::broker* listener_broker, caf::io::connection_handle hdl,
                        caf::actor listener, caf::actor router, context_ptr ctx,
                        uint64_t session_id, std::string peer_ip, std::string refusal,
                        bool summoner = false);

/// Trace events for a session's observer (Observe), from the trace
/// writer's thread (the only message that crosses from there).
struct tap_batch {
  /// The subscription it belongs to (a replaced one's batches are ignored).
  const void* from = nullptr;
  std::vector<trace::event> events;
  uint64_t missed = 0;
};

} // namespace convoke::server::internal

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::tap_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::register_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::relay_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::delivery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::notice_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::auth_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::list_request)
