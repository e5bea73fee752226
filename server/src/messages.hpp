#pragma once

// Messages exchanged by the server's actors (listener, router, sessions,
// cluster). Included only by the CAF translation units of the server. All of
// these actors are brokers on CAF's multiplexer thread. Most messages never
// leave the process and, except `auth_result` (sent by the authenticator's
// worker thread), never cross a thread: those types are whitelisted as
// local-only ("unsafe") message types, which CAF does not serialize. The
// types that cross to other cluster nodes (BASP) have `inspect` functions
// and are registered in the actor system's config (register_cluster_types).

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

// Cluster (docs/cluster.md). cluster actor <-> cluster actor (BASP):
/// (node_hello_atom, node_info): a node introduces itself; answered with
/// (node_welcome_atom, node_info, refusal): the refusal is empty if the
/// other node takes it (else it says why, e.g. another cluster name).
using node_hello_atom = caf::atom_constant<caf::atom("nodehello")>;
using node_welcome_atom = caf::atom_constant<caf::atom("nodewelc")>;
/// cluster actor -> router: (peer_up_atom, node_info) / (peer_down_atom,
/// node, boot).
using peer_up_atom = caf::atom_constant<caf::atom("peerup")>;
using peer_down_atom = caf::atom_constant<caf::atom("peerdown")>;
/// router <-> router (BASP), each with the sending node's name and boot:
/// (peer_sync_atom, node, boot, claims): its whole table;
/// (peer_claim_atom, node, boot, claim): an agent joined or changed;
/// (peer_gone_atom, node, boot, name): an agent left;
/// (peer_relay_atom, node, boot, relay_batch): messages to deliver;
/// (peer_ack_atom, node, boot, bytes): relayed bytes handled (flow control);
/// (peer_notice_atom, node, boot, sender name, notice_request): a Notice
/// for a sender on the receiving node (e.g. unknown_recipient);
/// (peer_leaving_atom, node, boot): it is going away.
using peer_sync_atom = caf::atom_constant<caf::atom("peersync")>;
using peer_claim_atom = caf::atom_constant<caf::atom("peerclaim")>;
using peer_gone_atom = caf::atom_constant<caf::atom("peergone")>;
using peer_relay_atom = caf::atom_constant<caf::atom("peerrelay")>;
using peer_ack_atom = caf::atom_constant<caf::atom("peerack")>;
using peer_notice_atom = caf::atom_constant<caf::atom("peernotice")>;
/// (peer_leaving_atom, node, boot): that node drains (SIGTERM) or goes
/// lame duck; it is not offered to agents as a place to reconnect.
using peer_leaving_atom = caf::atom_constant<caf::atom("peerleave")>;

/// What a node tells another about itself when they connect.
struct node_info {
  std::string cluster;
  std::string node;
  uint64_t boot = 0;
  /// Where agents connect to it ("host:port" or "tls://host:port").
  std::string client_addr;
  /// Its cluster.listen as host:bound port.
  std::string cluster_addr;
  /// The bits 44-51 of its message ids.
  uint64_t id_prefix = 0;
  /// Cluster addresses of the other nodes it is connected to.
  std::vector<std::string> known;
  caf::actor router;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_info& x) {
  return f(caf::meta::type_name("node_info"), x.cluster, x.node, x.boot, x.client_addr,
           x.cluster_addr, x.id_prefix, x.known, x.router);
}

/// One agent of a node, as the other nodes' directories hold it.
struct agent_claim {
  std::string name;
  std::string identity;
  std::vector<std::string> routes;
  bool restricted = false;
  bool receive = true;
  int64_t since_ns = 0;
  uint64_t generation = 0;
  std::string token_digest;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, agent_claim& x) {
  return f(caf::meta::type_name("agent_claim"), x.name, x.identity, x.routes, x.restricted,
           x.receive, x.since_ns, x.generation, x.token_digest);
}

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

// A relay batch crosses to other nodes (peer_relay_atom): the frames are
// already Delivery frames, so the receiving node only routes them.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, slice& x) {
  return f(x.offset, x.size);
}

template <class Inspector, size_t N>
typename Inspector::result_type inspect(Inspector& f, inline_bytes<N>& x) {
  std::string tmp{x.view()};
  return f(tmp, caf::meta::load_callback([&]() -> caf::error {
             x.assign(tmp);
             return caf::none;
           }));
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, relay_item& x) {
  return f(x.offset, x.size, x.recipient, x.route, x.message_id, x.client_seq, x.request_id,
           x.in_reply_to, x.needs_grant, x.payload_bytes, x.sent_ns, x.relayed_ns, x.trace_id,
           x.span_id, x.payload_excerpt, x.payload_truncated);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, relay_batch& x) {
  return f(caf::meta::type_name("relay_batch"), x.session_id, x.sender, x.frames, x.items,
           x.credit);
}

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

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, notice_request& x) {
  return f(caf::meta::type_name("notice_request"), x.severity, x.code, x.text, x.client_seq,
           x.message_id, x.request_id);
}

/// Registers the types that cross to other nodes (both ends must).
void register_cluster_types(caf::actor_system_config& cfg);

/// Spawns the cluster actor (cluster.name set): it keeps this node in the
/// mesh and tells `router` which nodes are up (docs/cluster.md).
caf::actor spawn_cluster(caf::actor_system& sys, caf::actor router, context_ptr ctx);

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
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::delivery)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::auth_result)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(convoke::server::internal::list_request)
