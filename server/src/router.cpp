// Router and listener brokers.
//
// The router owns the registry (routing_table) and turns relay batches into
// deliveries: for each batch it resolves every envelope's receivers, appends
// the encoded frames to one buffer per receiver, and sends each receiver one
// `deliver` message. When every envelope of a batch has the same receivers
// (the common fan-out case) a single buffer is shared by all of them.
//
// The listener accepts connections, forks a session broker for each, and
// drives the two-phase drain on shutdown.

#include <unistd.h>

#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/v1/wire.pb.h"
#include "lame_duck.hpp"
#include "messages.hpp"
#include "notice_limiter.hpp"
#include "routing_table.hpp"
#include "trace_record.hpp"

namespace convoke::server::internal {

namespace {

namespace codes = proto::codes;

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

using table_t = routing_table<caf::actor>;
using entry_t = table_t::entry;

struct router_state {
  static inline const char* name = "convoke.router";
  context_ptr ctx;
  table_t table;
  std::unordered_map<caf::actor_addr, uint64_t> by_addr;
  // Drain bookkeeping.
  bool draining = false;
  bool goodbyes_sent = false;
  std::unordered_set<uint64_t> drained;
  /// Lame-duck mode (server::lame_duck()): its schedule, the sessions in the
  /// order they will be asked to close (registered ones first, then those
  /// that register meanwhile; ids that left are skipped), those asked (and
  /// not yet forgotten), and the listener to tell once every agent is gone.
  struct lame_duck_run {
    lame_duck_plan plan;
    std::deque<uint64_t> queue;
    std::unordered_set<uint64_t> asked;
    caf::actor listener;
    bool done = false;
  };
  std::optional<lame_duck_run> lame;
  /// Rate limits of unknown_recipient Notices and trace records, by sender
  /// session, with a recipient named in the summary.
  struct limited {
    notice_limiter limiter;
    std::string example_recipient;
    /// Subscribes over limits.max-routes whose Notice was suppressed.
    uint64_t routes_refused = 0;
  };
  std::unordered_map<uint64_t, limited> limits;
  /// The admin listener's view of each agent; the router keeps its routes
  /// up to date there (/connz, /routez).
  std::unordered_map<uint64_t, session_info_ptr> infos;
  /// Registered agents whose `send` right is restricted: only then do
  /// requests record reply grants.
  size_t send_restricted = 0;
  /// Broadcast audiences traced so far: a hash of the receivers' session
  /// ids -> the audience's number (the latest 4096; then numbering goes on
  /// and definitions are recorded again).
  std::unordered_map<uint64_t, uint64_t> audiences;
  uint64_t next_audience = 0;
  std::vector<char> audience_names;
  // Scratch space reused across batches.
  std::vector<entry_t*> targets;
  std::unordered_map<entry_t*, delivery> per_target;

  // Cluster (docs/cluster.md); empty without one.
  /// Another node: its router and a routing table of its agents (names,
  /// subscriptions, rights), kept up to date by its claims.
  struct peer_node {
    std::string name;
    uint64_t boot = 0;
    caf::actor router;
    std::string client_addr;
    std::string cluster_addr;
    uint64_t id_prefix = 0;
    routing_table<int> table;
    uint64_t next_sid = 1;
    /// Relayed bytes sent and not yet acknowledged (cluster.max-pending-bytes).
    uint64_t pending = 0;
    /// Over the limit now (logged once per episode).
    bool over = false;
    /// It said it is going away (drain, lame duck).
    bool leaving = false;
  };
  std::map<std::string, peer_node, std::less<>> peers;
  /// The claims of lost nodes' agents, kept for a while: an agent of a lost
  /// node that resumes here with its resume token takes its name over
  /// (generation + 1), so its claim wins if the lost node comes back with
  /// the old session still open (a stopped process, a healed partition).
  struct lost_claim {
    uint64_t generation = 0;
    std::string identity;
    std::string token_digest;
    std::chrono::steady_clock::time_point until;
  };
  std::unordered_map<std::string, lost_claim> lost;
  /// This node's name and boot (what peers key our messages by).
  std::string node;
  uint64_t boot = 0;
  /// The nodes the current message goes to, and batches per node (general
  /// path).
  std::vector<peer_node*> remote_targets;
  std::unordered_map<peer_node*, relay_batch> per_node;
  std::string nodes_text;
};

using router_ptr = caf::io::stateful_broker<router_state>*;

/// Resume tokens are bearer secrets: 256 bits from the CSPRNG (a seeded
/// std::mt19937 can be rebuilt from ~160 observed tokens).
constexpr size_t resume_token_bytes = 32;

void forget(router_ptr self, uint64_t sid);

/// Copies an agent's subscriptions to its session_info (a subscription
/// change is rare; this is not on the relay path).
void publish_routes(router_state& st, const entry_t& e) {
  if (auto i = st.infos.find(e.session_id); i != st.infos.end())
    i->second->set_routes({e.routes.begin(), e.routes.end()});
}

// ---------------------------------------------------------------------------
// Cluster (docs/cluster.md): the other nodes' agents, and what crosses to them
// ---------------------------------------------------------------------------

using peer_node = router_state::peer_node;
using peer_entry = routing_table<int>::entry;

agent_claim claim_of(const entry_t& e) {
  agent_claim c;
  c.name = e.name;
  c.identity = e.identity;
  c.routes.assign(e.routes.begin(), e.routes.end());
  c.restricted = e.restricted;
  c.receive = e.receive;
  c.since_ns = e.since_ns;
  c.generation = e.generation;
  c.token_digest = e.token_digest;
  return c;
}

/// Publishes the cluster as the admin listener shows it (/varz) and as
/// Goodbyes hint at (reconnect_to).
void publish_cluster(router_state& st) {
  if (st.node.empty())
    return;
  cluster_status c;
  c.name = st.ctx->cfg.cluster_name;
  c.node = st.node;
  for (auto& [_, p] : st.peers) {
    if (!p.router)
      continue; // known from its claims only, not (yet) up
    c.peers.push_back({p.name, p.client_addr, p.cluster_addr, p.boot, p.table.size(), p.leaving});
  }
  st.ctx->set_cluster_view(std::move(c));
}

/// Tells every other node that this agent joined or changed.
void announce(router_ptr self, const entry_t& e) {
  auto& st = self->state;
  if (st.peers.empty())
    return;
  auto msg = caf::make_message(peer_claim_atom::value, st.node, st.boot, claim_of(e));
  for (auto& [_, p] : st.peers)
    if (p.router)
      self->send(p.router, msg);
}

/// The other node that holds `name`, and its entry (null if none does).
std::pair<peer_node*, peer_entry*> remote_holder(router_state& st, std::string_view name) {
  for (auto& [_, p] : st.peers)
    if (auto e = p.table.find_name(name))
      return {&p, e};
  return {nullptr, nullptr};
}

/// The entry for a node that sent us something. A node is known by its
/// name; a new boot is a restarted node, whose old agents are gone.
peer_node& peer_for(router_ptr self, const std::string& node, uint64_t boot) {
  auto& st = self->state;
  auto& p = st.peers[node];
  if (p.boot != boot) {
    p = peer_node{};
    p.name = node;
    p.boot = boot;
  }
  if (!p.router && self->current_sender() != nullptr)
    p.router = caf::actor_cast<caf::actor>(self->current_sender());
  return p;
}

void add_claim(peer_node& p, const agent_claim& c) {
  if (auto old = p.table.find_name(c.name))
    p.table.remove(old->session_id);
  auto& e = p.table.add(p.next_sid++, c.name, {}, 0, c.routes, c.restricted);
  e.identity = c.identity;
  e.receive = c.receive;
  e.since_ns = c.since_ns;
  e.generation = c.generation;
  e.token_digest = c.token_digest;
}

/// A node claims an agent name: settles a conflict with this node's agent
/// or a third node's claim the same way on every node (claim_beats).
void apply_claim(router_ptr self, peer_node& p, const agent_claim& c) {
  auto& st = self->state;
  if (!proto::check_agent_name(c.name) || c.routes.size() > 4096)
    return; // not what a Convoke node sends
  claim_key theirs{c.generation, c.since_ns, p.name};
  if (auto mine = st.table.find_name(c.name)) {
    if (!claim_beats(theirs, {mine->generation, mine->since_ns, st.node})) {
      // Ours stands: tell that node again (it settles the same way).
      self->send(p.router, peer_claim_atom::value, st.node, st.boot, claim_of(*mine));
      return;
    }
    st.ctx->log_router->warn("agent name conflict: node {} holds it; closing ours agent={} "
                             "session={}",
                             logfmt_value(p.name), logfmt_value(mine->name), mine->session_id);
    auto taken_over = c.generation > mine->generation;
    self->send(mine->handle, evict_atom::value,
               std::string{taken_over ? codes::replaced : codes::name_conflict},
               taken_over ? fmt::format("agent '{}' resumed on cluster node '{}' with its "
                                        "resume token",
                                        c.name, p.name)
                          : fmt::format("agent name '{}' was also accepted by cluster node '{}', "
                                        "whose claim is older; choose another name",
                                        c.name, p.name));
    forget(self, mine->session_id);
  }
  for (auto& [_, q] : st.peers) {
    if (&q == &p)
      continue;
    if (auto other = q.table.find_name(c.name)) {
      if (!claim_beats(theirs, {other->generation, other->since_ns, q.name}))
        return; // the third node's stands (that node tells p itself)
      q.table.remove(other->session_id);
    }
  }
  add_claim(p, c);
}

/// Tells the other nodes this one is going away (drain, lame duck), before
/// its agents are sent to them.
void tell_leaving(router_ptr self) {
  auto& st = self->state;
  for (auto& [_, p] : st.peers)
    if (p.router)
      self->send(p.router, peer_leaving_atom::value, st.node, st.boot);
}

/// Sends this node's whole table to a node that came up.
void sync_to(router_ptr self, peer_node& p) {
  auto& st = self->state;
  std::vector<agent_claim> all;
  all.reserve(st.table.size());
  st.table.for_each([&](entry_t& e) { all.push_back(claim_of(e)); });
  self->send(p.router, peer_sync_atom::value, st.node, st.boot, std::move(all));
}

/// How long a lost node's claims are remembered, and how many at most.
constexpr auto lost_claim_lifetime = std::chrono::minutes{10};
constexpr size_t max_lost_claims = 100'000;

/// A node was lost: its agents leave the namespace; every agent here is
/// told (node_lost).
void drop_peer(router_ptr self, const std::string& node, uint64_t boot) {
  auto& st = self->state;
  auto i = st.peers.find(node);
  if (i == st.peers.end() || i->second.boot != boot)
    return;
  auto agents = i->second.table.size();
  auto leaving = i->second.leaving;
  auto until = std::chrono::steady_clock::now() + lost_claim_lifetime;
  if (st.lost.size() > max_lost_claims)
    std::erase_if(st.lost, [&](auto& kv) { return kv.second.until < until - lost_claim_lifetime; });
  i->second.table.for_each([&](peer_entry& e) {
    if (!e.token_digest.empty() && st.lost.size() < max_lost_claims)
      st.lost[e.name] = {e.generation, e.identity, e.token_digest, until};
  });
  st.peers.erase(i);
  publish_cluster(st);
  st.ctx->log_router->log(leaving ? spdlog::level::info : spdlog::level::warn,
                          "cluster node {} node={} agents={}", leaving ? "left" : "lost",
                          logfmt_value(node), agents);
  notice_request n;
  n.severity = v1::Notice::INFO;
  n.code = std::string{codes::node_lost};
  n.text = leaving ? fmt::format("cluster node '{}' left the cluster (it was shut down); its {} "
                                 "agent(s) left until they reconnect to another node",
                                 node, agents)
                   : fmt::format("cluster node '{}' is unreachable: its {} agent(s) left until "
                                 "they reconnect to another node",
                                 node, agents);
  auto msg = caf::make_message(notice_atom::value, std::move(n));
  st.table.for_each([&](entry_t& e) { self->send(e.handle, msg); });
}

/// Sends `b` (its items already chosen) to node `p`, unless that node has
/// more than cluster.max-pending-bytes unacknowledged: then the messages are
/// dropped for it, counted, traced and their sender told.
void send_to_node(router_ptr self, peer_node& p, const caf::message& msg, const relay_batch& b,
                  const caf::actor& sender_session) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  auto bytes = b.frames.size();
  if (p.pending + bytes <= ctx.cfg.cluster_max_pending_bytes) {
    if (p.over)
      ctx.log_router->info("cluster node keeps up again node={}", logfmt_value(p.name));
    p.over = false;
    p.pending += bytes;
    self->send(p.router, msg);
    bump(ctx.stats.cluster_sent, b.items.size());
    return;
  }
  bump(ctx.stats.cluster_dropped, b.items.size());
  bump(ctx.stats.dropped, b.items.size());
  if (!p.over)
    ctx.log_router->warn("cluster node is not keeping up; dropping messages for it node={} "
                         "pending_bytes={} limit={}",
                         logfmt_value(p.name), p.pending, ctx.cfg.cluster_max_pending_bytes);
  p.over = true;
  if (ctx.trace->recording())
    for (auto& it : b.items) {
      record_fields f;
      f.what = trace::kind::dropped;
      f.message_id = it.message_id;
      f.sender = b.sender;
      f.recipient = it.recipient.in(b.frames);
      f.route = it.route.in(b.frames);
      f.payload_bytes = it.payload_bytes;
      f.ts_ns = unix_nanos();
      f.reason = codes::node_unreachable;
      f.nodes = p.name;
      ctx.trace->record(f);
    }
  if (!sender_session)
    return;
  auto& lim = st.limits[b.session_id];
  if (!lim.limiter.allow(notice_limiter::clock::now()))
    return;
  notice_request n;
  n.severity = v1::Notice::WARNING;
  n.code = std::string{codes::node_unreachable};
  n.text
    = fmt::format("{} message(s) (ids {} to {}) did not reach cluster node '{}': it is not "
                  "keeping up (cluster.max-pending-bytes)",
                  b.items.size(), b.items.front().message_id, b.items.back().message_id, p.name);
  n.message_id = b.items.back().message_id;
  self->send(sender_session, notice_atom::value, std::move(n));
}

/// Adds item `it` of `b` to the batch for node `p` (general path).
void add_for_node(router_state& st, peer_node* p, const relay_batch& b, const relay_item& it) {
  auto& nb = st.per_node[p];
  if (nb.items.empty()) {
    nb.sender = b.sender;
    nb.session_id = b.session_id;
  }
  auto item = it;
  item.offset = static_cast<uint32_t>(nb.frames.size());
  auto shift = [&](slice& s) {
    if (s.size > 0)
      s.offset = s.offset - it.offset + item.offset;
  };
  shift(item.recipient);
  shift(item.route);
  nb.frames.insert(nb.frames.end(), b.frames.begin() + it.offset,
                   b.frames.begin() + it.offset + it.size);
  nb.items.push_back(std::move(item));
}

/// Sends the batches add_for_node collected.
void flush_nodes(router_ptr self, const caf::actor& sender_session) {
  auto& st = self->state;
  for (auto& [p, nb] : st.per_node) {
    auto session_id = nb.session_id;
    nb.session_id = 0;
    auto msg = caf::make_message(peer_relay_atom::value, st.node, st.boot, nb);
    nb.session_id = session_id;
    send_to_node(self, *p, msg, nb, sender_session);
  }
  st.per_node.clear();
}

void on_register(router_ptr self, register_request& req) {
  auto& st = self->state;
  auto session = caf::actor_cast<caf::actor>(self->current_sender());
  auto refuse = [&](std::string_view code, std::string text) {
    notice_request n;
    n.code = std::string{code};
    n.text = std::move(text);
    self->send(session, refuse_atom::value, std::move(n));
  };
  if (st.draining) {
    refuse(codes::shutdown, "the server is shutting down");
    return;
  }
  // Agents (past Hello) are counted here; connections still handshaking
  // have their own cap (limits.max-handshakes) in the listener.
  auto max_agents = st.ctx->config()->max_agents; // reloadable (SIGHUP)
  if (st.table.size() >= max_agents && (req.name.empty() || !st.table.find_name(req.name))) {
    refuse(codes::server_full,
           fmt::format("the server is at its limit of {} agents (limits.max-agents)", max_agents));
    return;
  }
  if (req.name.empty()) {
    // In a cluster, session ids repeat across nodes: the name also carries
    // this node's message id prefix (unique among the nodes).
    req.name = st.node.empty() ? fmt::format("agent-{}", req.session_id)
                               : fmt::format("agent-{}-{:02x}", req.session_id,
                                             id_prefix_of(st.ctx->next_message_id.load()));
    while (st.table.find_name(req.name) != nullptr || remote_holder(st, req.name).second)
      req.name = fmt::format("agent-{}-{}", req.session_id, crypto::random_u64() % 10000);
  }
  // The text names no session or agent detail: the asker may be anyone.
  auto refuse_taken = [&] {
    refuse(codes::name_taken,
           fmt::format("agent name '{}' is already in use; choose another name, or present "
                       "the resume token of its Welcome to take it over",
                       req.name));
  };
  uint64_t generation = 0;
  if (auto [node, held] = remote_holder(st, req.name); held != nullptr) {
    // Held on another node: a take-over needs that agent's resume token,
    // checked against the digest its node sent (the token never leaves
    // the node that issued it).
    if (req.resume_token.empty() || req.identity != held->identity
        || !crypto::equal_constant_time(crypto::digest_hex(req.resume_token), held->token_digest)) {
      refuse_taken();
      return;
    }
    st.ctx->log_router->info("agent name taken over from cluster node {} agent={} session={}",
                             logfmt_value(node->name), logfmt_value(req.name), req.session_id);
    generation = held->generation + 1;
    node->table.remove(held->session_id);
  } else if (auto l = st.lost.find(req.name); l != st.lost.end()) {
    // Its node was lost: with the resume token it takes the name over, so
    // that it wins if that node comes back with the old session.
    if (std::chrono::steady_clock::now() < l->second.until && !req.resume_token.empty()
        && req.identity == l->second.identity
        && crypto::equal_constant_time(crypto::digest_hex(req.resume_token),
                                       l->second.token_digest))
      generation = l->second.generation + 1;
    st.lost.erase(l);
  }
  if (auto holder = st.table.find_name(req.name)) {
    // Constant time: the comparison must not tell how much of a guess was right.
    // The resume token alone does not move a name to another identity (whose
    // `names` may overlap): the take-over must come from the holder's own.
    if (req.resume_token.empty() || req.identity != holder->identity
        || !crypto::equal_constant_time(req.resume_token, holder->resume_token)) {
      refuse_taken();
      return;
    }
    // Take-over: the old session is told and forgotten right away.
    st.ctx->log_router->info("agent name taken over agent={} old_session={} new_session={}",
                             logfmt_value(req.name), holder->session_id, req.session_id);
    self->send(holder->handle, evict_atom::value);
    generation = holder->generation + 1;
    forget(self, holder->session_id);
  }
  auto token = crypto::random_hex(resume_token_bytes);
  auto& added = st.table.add(req.session_id, req.name, token, session, req.routes, req.restricted);
  added.identity = req.identity;
  added.receive = req.receive;
  added.send_restricted = req.send_restricted;
  if (!st.node.empty()) {
    added.since_ns = unix_nanos();
    added.generation = generation;
    added.token_digest = crypto::digest_hex(token);
    announce(self, added);
  }
  if (req.send_restricted)
    ++st.send_restricted;
  if (st.lame)
    st.lame->queue.push_back(req.session_id); // closed in turn, after those before it
  st.by_addr.emplace(session.address(), req.session_id);
  if (req.info) {
    st.infos[req.session_id] = std::move(req.info);
    publish_routes(st, added);
  }
  self->monitor(session);
  bump(st.ctx->stats.agents);
  self->send(session, welcome_atom::value, req.name, token);
}

void on_subscription(router_ptr self, bool subscribe, uint64_t sid,
                     const std::vector<std::string>& routes) {
  auto& st = self->state;
  auto e = st.table.find(sid);
  if (e == nullptr)
    return;
  auto max = st.ctx->cfg.max_routes;
  size_t refused = 0;
  std::string first_refused;
  for (auto& r : routes) {
    if (!subscribe) {
      st.table.unsubscribe(*e, r);
      continue;
    }
    if (e->routes.size() >= max && e->routes.count(r) == 0) {
      if (refused++ == 0)
        first_refused = r;
      continue;
    }
    st.table.subscribe(*e, r);
  }
  publish_routes(st, *e);
  announce(self, *e);
  if (refused > 0) { // one Notice per Subscribe, however many routes it named
    auto& lim = st.limits[sid];
    if (!lim.limiter.allow(notice_limiter::clock::now())) {
      // Rate-limited with the agent's other per-frame Notices.
      if (lim.routes_refused++ == 0 && lim.limiter.take_would_be_empty())
        self->delayed_send(self, notice_limiter::window, flush_notices_atom::value, sid);
      return;
    }
    notice_request n;
    n.severity = v1::Notice::WARNING;
    n.code = std::string{codes::too_many_routes};
    n.text = fmt::format("{} route(s) not subscribed, starting with '{}': the limit is {} "
                         "routes (limits.max-routes)",
                         refused, first_refused, max);
    self->send(e->handle, notice_atom::value, std::move(n));
  }
}

/// The number of a broadcast's audience (its receivers), recording its
/// definition the first time.
uint64_t audience_of(router_state& st, const std::vector<entry_t*>& targets, int64_t now) {
  // Order-independent: the table may list the same agents in another order.
  uint64_t sum = 0;
  uint64_t mixed = 0;
  for (auto e : targets) {
    auto h = (e->session_id + 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    sum += h;
    mixed ^= h * 0x94d049bb133111ebull;
  }
  auto key = sum ^ (mixed << 1) ^ targets.size();
  if (st.audiences.size() >= 4096)
    st.audiences.clear();
  auto [at, fresh] = st.audiences.try_emplace(key, 0);
  if (!fresh)
    return at->second;
  at->second = ++st.next_audience;
  auto& names = st.audience_names;
  names.clear();
  for (auto e : targets) {
    if (names.size() + e->name.size() + 2 > 0xffff)
      break; // a record holds 64 KiB of names; `count` still says how many
    append_name(names, e->name);
  }
  record_fields f;
  f.what = trace::kind::audience;
  f.audience = at->second;
  f.count = static_cast<uint32_t>(targets.size());
  f.ts_ns = now; // the routing of the first message that reached it
  f.names = {names.data(), names.size()};
  auto number = at->second;
  if (!st.ctx->trace->record(f))
    st.audiences.erase(at); // lost (a gap): define it again with the next broadcast
  return number;
}

void trace_relay(server_context& ctx, const relay_batch& b, const relay_item& it,
                 const std::vector<entry_t*>& targets, uint64_t audience, int64_t now,
                 std::string_view nodes) {
  record_fields f;
  f.what = trace::kind::relay;
  f.message_id = it.message_id;
  f.sender = b.sender;
  f.recipient = it.recipient.in(b.frames);
  f.route = it.route.in(b.frames);
  f.count = static_cast<uint32_t>(targets.size());
  f.audience = audience;
  f.payload_bytes = it.payload_bytes;
  f.sent_ns = it.sent_ns;
  f.accepted_ns = it.relayed_ns;
  f.ts_ns = now;
  f.trace_id = it.trace_id.view();
  f.span_id = it.span_id.view();
  f.request_id = it.request_id;
  f.in_reply_to = it.in_reply_to;
  f.payload = it.payload_excerpt;
  f.payload_truncated = it.payload_truncated;
  f.nodes = nodes;
  ctx.trace->record(f);
}

/// trace.written: whether writing `it` to each receiver is traced.
bool traces_writes(const server_context& ctx, const relay_item& it) {
  auto p = ctx.cfg.trace_written;
  return p == trace_written_policy::all
         || (p == trace_written_policy::traced && it.trace_id.size > 0);
}

void mark_written(delivery& d, const relay_item& it) {
  written_mark m;
  m.message_id = it.message_id;
  m.accepted_ns = it.relayed_ns;
  m.trace_id = it.trace_id;
  d.written.push_back(m);
}

/// A request reaching agents whose `send` right is restricted grants each
/// of them one reply to its sender.
void grant_replies(router_state& st, const relay_batch& b, const relay_item& it) {
  if (it.request_id == 0 || st.send_restricted == 0)
    return;
  for (auto e : st.targets)
    if (e->send_restricted)
      e->grants.grant(b.sender, it.request_id);
}

/// Routes a batch: from a local sender's session (`from` null), or from
/// another node (`from`), whose messages go to this node's agents only.
void on_relay(router_ptr self, relay_batch& b, peer_node* from) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  caf::actor sender_session;
  if (from == nullptr)
    sender_session = caf::actor_cast<caf::actor>(self->current_sender());
  std::optional<notice_limiter::clock::time_point> now; // read once per batch, if needed
  if (b.credit > 0 && from == nullptr)
    self->send(sender_session, credit_atom::value, b.credit);
  if (b.items.empty())
    return;
  bool recording = ctx.trace->recording();
  bool clustered = from == nullptr && !st.peers.empty();
  // A session replaced by a reconnect (resume token) may still have had
  // messages on their way: they were accepted, so they are routed; a
  // broadcast then skips the agent's new session as well (never back to
  // its sender).
  uint64_t also_skip = 0;
  if (from == nullptr && st.table.find(b.session_id) == nullptr)
    if (auto now_holder = st.table.find_name(b.sender))
      also_skip = now_holder->session_id;
  // Fast path: all items share one destination key (same recipient and
  // route), so every receiver gets the same bytes.
  bool uniform = !b.items[0].needs_grant;
  for (size_t i = 1; i < b.items.size() && uniform; ++i)
    uniform = b.items[i].recipient.in(b.frames) == b.items[0].recipient.in(b.frames)
              && b.items[i].route.in(b.frames) == b.items[0].route.in(b.frames)
              && !b.items[i].needs_grant;
  auto tell_sender = [&](notice_request&& n) {
    if (from != nullptr) // the sender is on that node
      self->send(from->router, peer_notice_atom::value, st.node, st.boot, b.sender, std::move(n));
    else
      self->send(sender_session, notice_atom::value, std::move(n));
  };
  auto resolve = [&](const relay_item& it) -> bool {
    st.targets.clear();
    st.remote_targets.clear();
    auto recipient = it.recipient.in(b.frames);
    if (recipient.empty()) {
      auto route = it.route.in(b.frames);
      st.table.broadcast_targets(b.session_id, route, st.targets);
      if (also_skip != 0)
        std::erase_if(st.targets, [&](entry_t* e) { return e->session_id == also_skip; });
      if (clustered)
        for (auto& [_, p] : st.peers)
          if (p.router && p.table.wants(route))
            st.remote_targets.push_back(&p);
      return true;
    }
    auto e = st.table.find_name(recipient);
    bool receive = e != nullptr && e->receive;
    if (e == nullptr && clustered)
      if (auto [node, held] = remote_holder(st, recipient); held != nullptr && node->router) {
        st.remote_targets.push_back(node);
        receive = held->receive;
      }
    bool known = e != nullptr || !st.remote_targets.empty();
    // A reply outside the sender's `send` right needs the request it
    // answers (a grant recorded when that request reached the sender).
    bool granted = true;
    if (it.needs_grant && known) {
      auto sender_entry = st.table.find(b.session_id);
      granted = sender_entry != nullptr && sender_entry->grants.use(recipient, it.in_reply_to);
    }
    if (known && receive && granted) {
      if (e != nullptr)
        st.targets.push_back(e);
      return true;
    }
    st.remote_targets.clear();
    // Unknown, or its identity may not receive direct messages, or a reply
    // to no request: the sender is told (rate-limited) and a trace record
    // says why.
    auto code = !known ? codes::unknown_recipient : codes::permission_denied;
    bump(!known ? ctx.stats.undeliverable : ctx.stats.permission_denied);
    if (!now)
      now = notice_limiter::clock::now();
    auto& lim = st.limits[b.session_id];
    if (from == nullptr && !lim.limiter.allow(*now)) {
      if (lim.limiter.suppress(it.message_id)) {
        lim.example_recipient = std::string{recipient};
        self->delayed_send(self, notice_limiter::window, flush_notices_atom::value, b.session_id);
      }
      return false;
    }
    notice_request n;
    n.severity = v1::Notice::WARNING;
    n.code = std::string{code};
    n.text = !known ? fmt::format("no agent named '{}' is connected; message {} was not delivered",
                                  recipient, it.message_id)
             : !granted
               ? fmt::format("you may not send direct messages to '{}' (right: send), and it "
                             "sent you no request {} to reply to; message {} was not delivered",
                             recipient, it.in_reply_to, it.message_id)
               : fmt::format("agent '{}' may not receive direct messages (right: receive); "
                             "message {} was not delivered",
                             recipient, it.message_id);
    n.client_seq = it.client_seq;
    n.message_id = it.message_id;
    n.request_id = it.request_id;
    tell_sender(std::move(n));
    if (ctx.trace->recording()) {
      record_fields f;
      f.what = !known ? trace::kind::undeliverable : trace::kind::rejected;
      f.message_id = it.message_id;
      f.sender = b.sender;
      f.recipient = recipient;
      f.route = it.route.in(b.frames);
      f.payload_bytes = it.payload_bytes;
      f.sent_ns = it.sent_ns;
      f.accepted_ns = it.relayed_ns;
      f.ts_ns = unix_nanos();
      f.trace_id = it.trace_id.view();
      f.span_id = it.span_id.view();
      f.request_id = it.request_id;
      f.in_reply_to = it.in_reply_to;
      f.reason = code;
      if (from != nullptr)
        f.nodes = st.nodes_text = from->name + ">" + st.node;
      ctx.trace->record(f);
    }
    return false;
  };
  // The nodes a message crossed, for its trace record: "a>b,c" on the node
  // it came from, "a>b" on a node it reached.
  auto crossed = [&]() -> std::string_view {
    if (from != nullptr) {
      st.nodes_text = from->name;
      st.nodes_text += '>';
      st.nodes_text += st.node;
      return st.nodes_text;
    }
    if (st.remote_targets.empty())
      return {};
    st.nodes_text = st.node;
    st.nodes_text += '>';
    for (size_t i = 0; i < st.remote_targets.size(); ++i) {
      if (i > 0)
        st.nodes_text += ',';
      st.nodes_text += st.remote_targets[i]->name;
    }
    return st.nodes_text;
  };
  if (uniform) {
    if (!resolve(b.items[0])) {
      // Unknown recipient: one Notice per message.
      for (size_t i = 1; i < b.items.size(); ++i)
        resolve(b.items[i]);
      return;
    }
    delivery d;
    if (recording) {
      auto routed_ns = unix_nanos();
      auto audience = b.items[0].recipient.empty() ? audience_of(st, st.targets, routed_ns) : 0;
      auto nodes = crossed();
      for (auto& it : b.items) {
        trace_relay(ctx, b, it, st.targets, audience, routed_ns, nodes);
        if (traces_writes(ctx, it))
          mark_written(d, it);
      }
    }
    if (st.send_restricted > 0)
      for (auto& it : b.items)
        grant_replies(st, b, it);
    if (!st.remote_targets.empty()) {
      // One message for every node it goes to (each delivers to its own).
      auto session_id = std::exchange(b.session_id, 0);
      auto credit = std::exchange(b.credit, 0);
      auto msg = caf::make_message(peer_relay_atom::value, st.node, st.boot, b);
      b.session_id = session_id;
      b.credit = credit;
      for (auto p : st.remote_targets)
        send_to_node(self, *p, msg, b, sender_session);
    }
    if (st.targets.empty())
      return;
    d.relayed_ns = b.items.front().relayed_ns;
    d.frames = std::move(b.frames);
    d.count = static_cast<uint32_t>(b.items.size());
    d.first_id = b.items.front().message_id;
    d.last_id = b.items.back().message_id;
    auto msg = caf::make_message(deliver_atom::value, std::move(d));
    for (auto e : st.targets)
      self->send(e->handle, msg);
    bump(ctx.stats.deliveries, b.items.size() * st.targets.size());
    return;
  }
  // General path: one buffer per receiver.
  auto& per = st.per_target;
  per.clear();
  uint64_t deliveries = 0;
  int64_t routed_ns = recording ? unix_nanos() : 0;
  for (auto& it : b.items) {
    if (!resolve(it))
      continue;
    bool written = false;
    if (recording) {
      auto audience = it.recipient.empty() ? audience_of(st, st.targets, routed_ns) : 0;
      trace_relay(ctx, b, it, st.targets, audience, routed_ns, crossed());
      written = traces_writes(ctx, it);
    }
    grant_replies(st, b, it);
    for (auto p : st.remote_targets)
      add_for_node(st, p, b, it);
    for (auto e : st.targets) {
      auto& d = per[e];
      if (d.count == 0) {
        d.first_id = it.message_id;
        d.relayed_ns = it.relayed_ns;
      }
      if (written)
        mark_written(d, it);
      d.frames.insert(d.frames.end(), b.frames.begin() + it.offset,
                      b.frames.begin() + it.offset + it.size);
      ++d.count;
      d.last_id = it.message_id;
    }
    deliveries += st.targets.size();
  }
  if (!st.per_node.empty())
    flush_nodes(self, sender_session);
  for (auto& [e, d] : per)
    self->send(e->handle, deliver_atom::value, std::move(d));
  per.clear();
  bump(ctx.stats.deliveries, deliveries);
}

/// Whether a batch from another node is whole: every frame and field
/// inside its bytes (a node sends only what its sessions checked; a
/// damaged one is not routed).
bool well_formed(const relay_batch& b) {
  auto inside = [&](uint64_t offset, uint64_t size) { return offset + size <= b.frames.size(); };
  for (auto& it : b.items)
    if (!inside(it.offset, it.size) || !inside(it.recipient.offset, it.recipient.size)
        || !inside(it.route.offset, it.route.size))
      return false;
  return !b.sender.empty();
}

/// Answers a session's ListAgents (after everything it sent before).
void on_list(router_ptr self, const list_request& req) {
  auto& st = self->state;
  std::vector<std::string> names;
  bool truncated = false;
  auto list = [&](auto& table, std::vector<std::string>& out) {
    if (req.only_sendable) {
      auto& rights = req.only_sendable->rights;
      truncated |= table.list_names(
        req.prefix, req.after, req.limit, [&](const auto& e) { return rights.may_send(e.name); },
        out);
    } else {
      truncated |= table.list_names(
        req.prefix, req.after, req.limit, [](const auto&) { return true; }, out);
    }
  };
  list(st.table, names);
  if (!st.peers.empty()) {
    // The whole cluster's namespace (docs/cluster.md).
    std::vector<std::vector<std::string>> lists;
    lists.push_back(std::move(names));
    for (auto& [_, p] : st.peers)
      list(p.table, lists.emplace_back());
    names = merge_names(std::move(lists), req.limit, truncated);
  }
  self->send(caf::actor_cast<caf::actor>(self->current_sender()), agent_list_atom::value,
             req.request_id, std::move(names), truncated);
}

/// Shutdown phase 2, once every registered session has drained.
void maybe_finish_drain(router_ptr self) {
  auto& st = self->state;
  if (!st.draining)
    return;
  bool all = true;
  st.table.for_each([&](entry_t& e) { all = all && st.drained.count(e.session_id) > 0; });
  if (!all)
    return;
  if (st.goodbyes_sent)
    return;
  st.goodbyes_sent = true;
  st.table.for_each([&](entry_t& e) { self->send(e.handle, goodbye_atom::value); });
  st.ctx->log_router->info("drain complete agents={}", st.table.size());
  // The router stays until the listener has seen every session end (stop):
  // closing sessions still leave through it.
}

/// The end of a suppression window: one Notice and one trace record for
/// every unknown_recipient report that was rate-limited.
void flush_suppressed(router_ptr self, uint64_t sid) {
  auto& st = self->state;
  auto i = st.limits.find(sid);
  if (i == st.limits.end())
    return;
  auto s = i->second.limiter.take();
  auto routes_refused = std::exchange(i->second.routes_refused, 0);
  auto& ctx = *st.ctx;
  auto e = st.table.find(sid);
  if (routes_refused > 0 && e != nullptr) {
    notice_request n;
    n.severity = v1::Notice::WARNING;
    n.code = std::string{codes::notices_suppressed};
    n.text = fmt::format("{} more of your Subscribe frames went over limits.max-routes ({}); "
                         "their too_many_routes Notices were not sent (at most {} per second are)",
                         routes_refused, ctx.cfg.max_routes,
                         static_cast<int>(notice_limiter::per_second));
    self->send(e->handle, notice_atom::value, std::move(n));
  }
  if (s.count == 0)
    return;
  if (ctx.trace->recording()) {
    record_fields f;
    f.what = trace::kind::undeliverable;
    f.message_id = s.first_id;
    f.last_message_id = s.last_id;
    f.count = static_cast<uint32_t>(s.count);
    if (e != nullptr)
      f.sender = e->name;
    f.recipient = i->second.example_recipient;
    f.ts_ns = unix_nanos();
    f.reason = codes::unknown_recipient;
    ctx.trace->record(f);
  }
  if (e == nullptr)
    return;
  notice_request n;
  n.severity = v1::Notice::WARNING;
  n.code = std::string{codes::notices_suppressed};
  n.text = fmt::format("{} more of your messages (ids {} to {}) went to agents that are not "
                       "connected (or may not receive direct messages), e.g. '{}'; their "
                       "Notices were not sent (at most {} per second are)",
                       s.count, s.first_id, s.last_id, i->second.example_recipient,
                       static_cast<int>(notice_limiter::per_second));
  n.message_id = s.last_id;
  self->send(e->handle, notice_atom::value, std::move(n));
}

/// Lame duck is over once the closing window has begun and no agent is
/// left: the listener drains what remains (connections still handshaking)
/// and the server stops.
void maybe_finish_lame_duck(router_ptr self) {
  auto& st = self->state;
  if (!st.lame || st.lame->done || st.draining || st.table.size() != 0
      || std::chrono::steady_clock::now() < st.lame->plan.closing_begins())
    return;
  st.lame->done = true;
  st.ctx->lame_duck_done.store(true, std::memory_order_relaxed);
  st.ctx->log_router->info("lame duck complete: every agent is gone; stopping");
  self->send(st.lame->listener, drain_atom::value);
}

/// Lame-duck timer: asks the agents that are due to close.
void lame_duck_tick(router_ptr self) {
  auto& st = self->state;
  if (!st.lame || st.lame->done || st.draining)
    return; // a shutdown took over (its drain closes everybody)
  auto& run = *st.lame;
  auto now = std::chrono::steady_clock::now();
  auto open = st.table.size() - std::min(st.table.size(), run.asked.size());
  auto n = run.plan.due(now, open);
  while (n > 0 && !run.queue.empty()) {
    auto sid = run.queue.front();
    run.queue.pop_front();
    auto e = st.table.find(sid);
    if (e == nullptr || run.asked.count(sid) > 0)
      continue; // it left on its own
    --n;
    --open;
    run.asked.insert(sid);
    auto hint = static_cast<uint64_t>(run.plan.reconnect_hint(crypto::random_u64()).count());
    st.ctx->log_router->info(
      "lame duck closing agent={} session={} reconnect_after_ms={} still_open={}",
      logfmt_value(e->name), sid, hint, open);
    self->send(e->handle, lame_duck_atom::value, hint);
  }
  maybe_finish_lame_duck(self);
  if (run.done)
    return;
  auto next = run.plan.next_check(now, open);
  self->delayed_send(self, std::chrono::duration_cast<std::chrono::microseconds>(next - now),
                     lame_tick_atom::value);
}

/// Removes a session from the registry (it left or died).
void forget(router_ptr self, uint64_t sid) {
  auto& st = self->state;
  flush_suppressed(self, sid); // its trace record
  st.limits.erase(sid);
  st.infos.erase(sid);
  auto e = st.table.find(sid);
  if (e == nullptr)
    return;
  self->demonitor(e->handle);
  if (!st.peers.empty()) {
    auto gone = caf::make_message(peer_gone_atom::value, st.node, st.boot, e->name);
    for (auto& [_, p] : st.peers)
      if (p.router)
        self->send(p.router, gone);
  }
  if (e->send_restricted)
    --st.send_restricted;
  st.by_addr.erase(e->handle.address());
  st.table.remove(sid);
  st.drained.erase(sid);
  st.ctx->stats.agents.fetch_sub(1, std::memory_order_relaxed);
  if (st.lame)
    st.lame->asked.erase(sid);
  maybe_finish_drain(self);
  maybe_finish_lame_duck(self);
}

caf::behavior router_actor(router_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->set_down_handler([self](caf::down_msg& dm) {
    // A session that died without leaving (it normally leaves first).
    auto& st = self->state;
    if (auto i = st.by_addr.find(dm.source); i != st.by_addr.end())
      forget(self, i->second);
  });
  return {
    [self](register_atom, register_request& req) { on_register(self, req); },
    [self](relay_atom, relay_batch& b) { on_relay(self, b, nullptr); },
    // Cluster (docs/cluster.md).
    [self](node_info& me) {
      // From server.cpp: this node's name and boot.
      self->state.node = me.node;
      self->state.boot = me.boot;
      publish_cluster(self->state);
    },
    [self](peer_up_atom, node_info& info) {
      auto& st = self->state;
      auto& p = st.peers[info.node];
      if (p.boot != info.boot) {
        if (p.boot != 0)
          drop_peer(self, info.node, p.boot); // restarted: its old agents are gone
        auto& fresh = st.peers[info.node];
        fresh.name = info.node;
        fresh.boot = info.boot;
      }
      auto& q = st.peers[info.node];
      q.router = info.router;
      q.client_addr = info.client_addr;
      q.cluster_addr = info.cluster_addr;
      q.id_prefix = info.id_prefix;
      // Two nodes with one message id prefix: the one whose name sorts
      // last draws another for the ids it stamps from now on.
      auto mine = id_prefix_of(st.ctx->next_message_id.load());
      if (info.id_prefix == mine && st.node > info.node) {
        std::vector<uint64_t> taken;
        for (auto& [_, other] : st.peers)
          taken.push_back(other.id_prefix);
        auto next = pick_id_prefix(crypto::random_u64(), taken);
        st.ctx->next_message_id.store(first_message_id(next));
        st.ctx->log_router->info("message id prefix in use by node {}; now {:02x}",
                                 logfmt_value(info.node), next);
      }
      sync_to(self, q);
      publish_cluster(st);
    },
    [self](peer_down_atom, const std::string& node, uint64_t boot) { drop_peer(self, node, boot); },
    [self](peer_sync_atom, const std::string& node, uint64_t boot,
           const std::vector<agent_claim>& claims) {
      auto& p = peer_for(self, node, boot);
      std::vector<uint64_t> sids;
      p.table.for_each([&](peer_entry& e) { sids.push_back(e.session_id); });
      for (auto sid : sids)
        p.table.remove(sid);
      for (auto& c : claims)
        apply_claim(self, p, c);
      publish_cluster(self->state);
    },
    [self](peer_claim_atom, const std::string& node, uint64_t boot, const agent_claim& c) {
      apply_claim(self, peer_for(self, node, boot), c);
      publish_cluster(self->state);
    },
    [self](peer_gone_atom, const std::string& node, uint64_t boot, const std::string& name) {
      auto& p = peer_for(self, node, boot);
      if (auto e = p.table.find_name(name))
        p.table.remove(e->session_id);
      publish_cluster(self->state);
    },
    [self](peer_relay_atom, const std::string& node, uint64_t boot, relay_batch& b) {
      auto& st = self->state;
      auto& p = peer_for(self, node, boot);
      auto bytes = static_cast<uint64_t>(b.frames.size());
      if (well_formed(b)) {
        bump(st.ctx->stats.cluster_received, b.items.size());
        b.session_id = 0; // no session here: nobody is skipped, nobody credited
        b.credit = 0;
        on_relay(self, b, &p);
      } else {
        st.ctx->log_router->warn("cluster node sent a damaged batch node={}", logfmt_value(node));
      }
      if (p.router)
        self->send(p.router, peer_ack_atom::value, st.node, st.boot, bytes);
    },
    [self](peer_leaving_atom, const std::string& node, uint64_t boot) {
      auto& st = self->state;
      if (auto i = st.peers.find(node); i != st.peers.end() && i->second.boot == boot) {
        i->second.leaving = true;
        st.ctx->log_router->info("cluster node leaving node={}", logfmt_value(node));
        publish_cluster(st);
      }
    },
    [self](peer_ack_atom, const std::string& node, uint64_t boot, uint64_t bytes) {
      auto& st = self->state;
      if (auto i = st.peers.find(node); i != st.peers.end() && i->second.boot == boot)
        i->second.pending -= std::min(i->second.pending, bytes);
    },
    [self](peer_notice_atom, const std::string&, uint64_t, const std::string& sender,
           notice_request& n) {
      // About a message an agent here sent to another node.
      auto& st = self->state;
      auto e = st.table.find_name(sender);
      if (e == nullptr)
        return;
      auto& lim = st.limits[e->session_id];
      if (!lim.limiter.allow(notice_limiter::clock::now())) {
        if (lim.limiter.suppress(n.message_id))
          self->delayed_send(self, notice_limiter::window, flush_notices_atom::value,
                             e->session_id);
        return;
      }
      self->send(e->handle, notice_atom::value, std::move(n));
    },
    [self](leave_atom, uint64_t sid) {
      // The session closed. Everything routed to it before this answer is
      // in its mailbox ahead of the answer, so it can count what it drops.
      forget(self, sid);
      self->send(caf::actor_cast<caf::actor>(self->current_sender()), left_atom::value);
    },
    [self](subscribe_atom, uint64_t sid, const std::vector<std::string>& routes) {
      on_subscription(self, true, sid, routes);
    },
    [self](unsubscribe_atom, uint64_t sid, const std::vector<std::string>& routes) {
      on_subscription(self, false, sid, routes);
    },
    [self](drain_atom) {
      auto& st = self->state;
      if (st.draining)
        return; // told by both the listener and the server (whichever is first)
      st.draining = true;
      tell_leaving(self);
      st.ctx->log_router->info("draining agents={}", st.table.size());
      self->delayed_send(self, st.ctx->cfg.drain_timeout / 2, drain_deadline_atom::value);
      maybe_finish_drain(self);
    },
    [self](list_atom, const list_request& req) { on_list(self, req); },
    [self](lame_duck_atom, caf::actor& listener) {
      auto& st = self->state;
      if (st.draining || st.lame)
        return;
      auto& cfg = st.ctx->cfg;
      st.lame.emplace(
        router_state::lame_duck_run{lame_duck_plan{std::chrono::steady_clock::now(),
                                                   cfg.lame_duck_grace, cfg.lame_duck_duration},
                                    {},
                                    {},
                                    std::move(listener),
                                    false});
      st.table.for_each([&](entry_t& e) { st.lame->queue.push_back(e.session_id); });
      tell_leaving(self);
      st.ctx->log_router->info("lame duck agents={} grace={} duration={}", st.table.size(),
                               format_duration(cfg.lame_duck_grace),
                               format_duration(cfg.lame_duck_duration));
      lame_duck_tick(self);
    },
    [self](lame_tick_atom) { lame_duck_tick(self); },
    [self](lame_duck_atom, uint64_t sid) {
      // The session stopped reading and everything it read was routed
      // (it is ahead of this in the mailbox). Forget it, so nothing more
      // is routed to it, and let it say Goodbye: everything routed to it
      // so far is in its mailbox ahead of lame_bye.
      auto& st = self->state;
      if (st.draining)
        return; // the shutdown's Goodbye comes instead
      auto e = st.table.find(sid);
      if (e == nullptr)
        return;
      self->send(e->handle, lame_bye_atom::value);
      forget(self, sid);
    },
    [self](barrier_atom, uint64_t tag) {
      self->send(caf::actor_cast<caf::actor>(self->current_sender()), barrier_atom::value, tag);
    },
    [self](stop_atom) { self->quit(); },
    [self](alive_atom) { bump(self->state.ctx->relay_answers); },
    [self](flush_notices_atom, uint64_t sid) { flush_suppressed(self, sid); },
    [self](shed_atom) {
      self->state.table.for_each([&](entry_t& e) { self->send(e.handle, shed_atom::value); });
    },
    [self](drained_atom, uint64_t sid) {
      self->state.drained.insert(sid);
      maybe_finish_drain(self);
    },
    [self](drain_deadline_atom) {
      auto& st = self->state;
      if (st.goodbyes_sent)
        return;
      st.ctx->log_router->warn("drain deadline reached; closing remaining agents");
      st.table.for_each([&](entry_t& e) { st.drained.insert(e.session_id); });
      maybe_finish_drain(self);
    },
  };
}

// ---------------------------------------------------------------------------
// Listener
// ---------------------------------------------------------------------------

struct listener_state {
  static inline const char* name = "convoke.listener";
  context_ptr ctx;
  caf::actor router;
  /// Every session, by id; and the id of each session actor.
  std::unordered_map<uint64_t, caf::actor> sessions;
  std::unordered_map<caf::actor_addr, uint64_t> id_of;
  /// Sessions that have not sent a valid Hello yet, oldest first (the deque
  /// may hold ids that left the set already; they are skipped).
  std::deque<std::pair<uint64_t, std::chrono::steady_clock::time_point>> handshaking_order;
  std::unordered_set<uint64_t> handshaking;
  uint64_t next_session_id = 1;
  bool draining = false;
  /// Open connections per peer address (limits.max-connections-per-address)
  /// and the address each counted session was counted under.
  address_counts per_address;
  std::unordered_map<uint64_t, std::string> address_of;
  /// Connections refused over that limit since the last warning (logged at
  /// most every 10 s, not once per connection of a flood).
  uint64_t refused_unlogged = 0;
  std::optional<std::chrono::steady_clock::time_point> refused_logged;
  /// The sessions' timers (see schedule() in session.cpp), by session id.
  /// One delayed self-send is pending, for the earliest deadline.
  struct timer {
    int64_t due;
    uint64_t seq; // FIFO among equal deadlines
    uint64_t sid;
    caf::atom_value what;
    bool operator>(const timer& other) const {
      return due != other.due ? due > other.due : seq > other.seq;
    }
  };
  std::priority_queue<timer, std::vector<timer>, std::greater<>> timers;
  int64_t timers_armed = std::numeric_limits<int64_t>::max();
  uint64_t timer_seq = 0;
};

using listener_ptr = caf::io::stateful_broker<listener_state>*;

/// The end of a shutdown: every session has ended, so the router can go too.
void stop(listener_ptr self) {
  self->send(self->state.router, stop_atom::value);
  self->quit();
}

/// A connection younger than this is not evicted for a newer one: its
/// Hello may simply not have been read yet (a burst of real agents).
constexpr auto eviction_min_age = std::chrono::milliseconds{250};

/// Makes room for one more handshaking connection: the oldest one that has
/// still not said Hello is closed (server_busy), if it has had time to say
/// it. Real agents send Hello at once, so a flood of silent sockets evicts
/// itself, not them. (In a burst of fresh connections the cap is exceeded
/// by at most what arrives within eviction_min_age.)
void evict_oldest_handshake(listener_ptr self, std::chrono::steady_clock::time_point now) {
  auto& st = self->state;
  while (!st.handshaking_order.empty()) {
    auto [sid, since] = st.handshaking_order.front();
    if (st.handshaking.count(sid) == 0) {
      st.handshaking_order.pop_front();
      continue;
    }
    if (now - since < eviction_min_age)
      return;
    st.handshaking_order.pop_front();
    st.handshaking.erase(sid);
    if (auto i = st.sessions.find(sid); i != st.sessions.end()) {
      bump(st.ctx->stats.handshakes_evicted);
      self->send(i->second, busy_atom::value);
    }
    return;
  }
}

void handshake_over(listener_ptr self, uint64_t sid) {
  auto& st = self->state;
  st.handshaking.erase(sid);
  // Keep the order queue from growing with ids that already left.
  if (st.handshaking_order.size() > 2 * st.handshaking.size() + 64) {
    std::deque<std::pair<uint64_t, std::chrono::steady_clock::time_point>> live;
    for (auto& x : st.handshaking_order)
      if (st.handshaking.count(x.first) > 0)
        live.push_back(x);
    st.handshaking_order.swap(live);
  }
}

int64_t steady_ns() {
  return static_cast<int64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

void arm_timers(listener_ptr self) {
  auto& st = self->state;
  if (st.timers.empty() || st.timers.top().due >= st.timers_armed)
    return;
  st.timers_armed = st.timers.top().due;
  auto wait = std::chrono::nanoseconds{std::max<int64_t>(0, st.timers_armed - steady_ns())};
  self->delayed_send(self, std::chrono::duration_cast<std::chrono::microseconds>(wait),
                     tick_atom::value);
}

/// Counts a new connection from `address` under
/// limits.max-connections-per-address. Over it: the refusal's text (the
/// session says it in a too_many_connections Notice and closes), counted,
/// and a warning at most every 10 s.
std::string admit_address(listener_ptr self, const std::string& address, uint32_t limit,
                          std::chrono::steady_clock::time_point now) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  if (st.per_address.admit(address, limit))
    return {};
  bump(ctx.stats.too_many_connections);
  ++st.refused_unlogged;
  if (!st.refused_logged || now - *st.refused_logged >= std::chrono::seconds{10}) {
    st.refused_logged = now;
    ctx.log_server->warn("connections refused address={} open={} "
                         "limit={} refused={} (limits.max-connections-per-address)",
                         address, st.per_address.open(address), limit,
                         std::exchange(st.refused_unlogged, 0));
  }
  return fmt::format("{} connections from {} are open already; "
                     "limits.max-connections-per-address is {}",
                     st.per_address.open(address), address, limit);
}

/// Forks a session for a socket from the acceptor (`summoner`: from the
/// Summoner compatibility listener) and counts it.
void accept_connection(listener_ptr self, int fd, bool summoner) {
  auto& st = self->state;
  if (st.draining) {
    ::close(fd);
    return;
  }
  auto now = std::chrono::steady_clock::now();
  // The limits in force (a reload may have changed them), and the
  // multiplexer's own state brought up to date with them.
  auto live = st.ctx->config();
  st.ctx->sync_multiplexer_state();
  auto address = peer_address(fd);
  auto refusal = admit_address(self, address, live->max_connections_per_address, now);
  auto hdl = self->add_scribe(fd);
  bool admitted = refusal.empty();
  if (admitted && st.handshaking.size() >= live->max_handshakes)
    evict_oldest_handshake(self, now);
  auto sid = st.next_session_id++;
  auto s = fork_session(self, hdl, caf::actor_cast<caf::actor>(self), st.router, st.ctx, sid,
                        address, std::move(refusal), summoner);
  self->monitor(s);
  st.id_of.emplace(s.address(), sid);
  st.sessions.emplace(sid, std::move(s));
  if (!admitted)
    return; // it closes on its own within the refusal grace
  st.address_of.emplace(sid, std::move(address));
  st.handshaking.insert(sid);
  st.handshaking_order.emplace_back(sid, now);
}

caf::behavior listener_actor(listener_ptr self, caf::actor router, context_ptr ctx) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.router = std::move(router);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (auto i = st.id_of.find(dm.source); i != st.id_of.end()) {
      st.sessions.erase(i->second);
      handshake_over(self, i->second);
      if (auto a = st.address_of.find(i->second); a != st.address_of.end()) {
        st.per_address.release(a->second);
        st.address_of.erase(a);
      }
      st.id_of.erase(i);
    }
    if (st.draining && st.sessions.empty())
      stop(self);
  });
  return {
    [self](accepted_atom, int fd) { accept_connection(self, fd, false); },
    [self](summoner_accepted_atom, int fd) { accept_connection(self, fd, true); },
    [self](quarantine_atom, uint64_t sid, int64_t left_ms) {
      // A session's principal was quarantined: close its other sessions.
      auto& st = self->state;
      if (auto i = st.sessions.find(sid); i != st.sessions.end())
        self->send(i->second, quarantine_atom::value, left_ms);
    },
    [self](hello_atom, uint64_t sid) { handshake_over(self, sid); },
    [self](timer_atom, uint64_t sid, caf::atom_value what, int64_t due) {
      auto& st = self->state;
      st.timers.push({due, st.timer_seq++, sid, what});
      arm_timers(self);
    },
    [self](tick_atom) {
      auto& st = self->state;
      st.timers_armed = std::numeric_limits<int64_t>::max();
      auto now = steady_ns();
      while (!st.timers.empty() && st.timers.top().due <= now) {
        auto t = st.timers.top();
        st.timers.pop();
        if (auto i = st.sessions.find(t.sid); i != st.sessions.end())
          self->send(i->second, t.what);
      }
      arm_timers(self);
    },
    [self](drain_atom) {
      auto& st = self->state;
      if (st.draining)
        return;
      st.draining = true;
      st.ctx->log_server->info("shutting down: stopped accepting connections={}",
                               st.sessions.size());
      self->send(st.router, drain_atom::value);
      for (auto& [sid, s] : st.sessions)
        self->send(s, drain_atom::value);
      if (st.sessions.empty())
        stop(self);
    },
  };
}

} // namespace

caf::actor spawn_router(caf::actor_system& sys, context_ptr ctx) {
  return sys.middleman().spawn_broker(router_actor, std::move(ctx));
}

caf::actor spawn_listener(caf::actor_system& sys, caf::actor router, context_ptr ctx) {
  return sys.middleman().spawn_broker(listener_actor, std::move(router), std::move(ctx));
}

} // namespace convoke::server::internal
