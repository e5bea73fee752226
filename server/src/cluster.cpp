// The cluster actor (docs/cluster.md): keeps this node in the full mesh.
//
// It is published on cluster.listen (CAF's BASP, io::middleman). It connects
// to the seeds of cluster.peers and to every node they know, retrying every
// cluster.retry; each connection starts with a handshake (node_info both
// ways), after which both ends monitor each other's cluster actor. A down
// message (the connection closed, or BASP heartbeats stopped for
// cluster.timeout) means the node is lost. The router is told of every node
// that comes up or is lost; the routers then talk to each other directly.

#include <map>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "caf/openssl/manager.hpp"
#include "convoke/common/secure_random.hpp"
#include "convoke/common/text.hpp"
#include "convoke/common/units.hpp"
#include "messages.hpp"

namespace convoke::server::internal {

namespace {

struct cluster_state {
  static inline const char* name = "convoke.cluster";
  context_ptr ctx;
  caf::actor router;
  node_info me;
  /// Live nodes by name: what they said, and their cluster actor.
  struct peer {
    node_info info;
    caf::actor actor;
  };
  std::map<std::string, peer, std::less<>> peers;
  std::unordered_map<caf::actor_addr, std::string> node_of;
  /// Cluster addresses to stay connected to: the seeds and every address
  /// learnt from other nodes; those found to be this node; those being
  /// connected to now.
  std::set<std::string> addresses;
  std::set<std::string> own;
  std::set<std::string> connecting;
  /// Refusals already logged, by address (logged once until it changes).
  std::map<std::string, std::string> refusals;
};

using cluster_ptr = caf::io::stateful_broker<cluster_state>*;

std::string addr_of(const host_port& hp) {
  return hp.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", hp.host, hp.port)
                                                : fmt::format("{}:{}", hp.host, hp.port);
}

/// Whether `addr` belongs to a live node (then it need not be connected).
bool connected(const cluster_state& st, const std::string& addr) {
  for (auto& [_, p] : st.peers)
    if (p.info.cluster_addr == addr)
      return true;
  return false;
}

/// The handshake's node_info with the current list of known nodes.
node_info introduce(const cluster_state& st) {
  auto me = st.me;
  me.known.clear();
  for (auto& [_, p] : st.peers)
    me.known.push_back(p.info.cluster_addr);
  return me;
}

void connect_all(cluster_ptr self);

/// Learns of the addresses a node told us (and its own).
void learn(cluster_ptr self, const node_info& info) {
  auto& st = self->state;
  bool fresh = false;
  auto add = [&](const std::string& a) {
    if (a.empty() || a.size() > 300 || st.addresses.size() >= 1024 || a == st.me.cluster_addr)
      return;
    fresh |= st.addresses.insert(a).second;
  };
  add(info.cluster_addr);
  for (size_t i = 0; i < info.known.size() && i < 256; ++i)
    add(info.known[i]);
  if (fresh)
    connect_all(self);
}

/// Why a node that introduced itself cannot join (empty: it can).
std::string refusal(const cluster_state& st, const node_info& info) {
  if (info.cluster != st.me.cluster)
    return fmt::format("cluster name '{}' is not this cluster's '{}'", info.cluster, st.me.cluster);
  if (info.node == st.me.node)
    return info.boot == st.me.boot ? "self"
                                   : fmt::format("node name '{}' is this node's", info.node);
  if (!info.router)
    return "no router";
  return {};
}

void add_peer(cluster_ptr self, node_info info, caf::actor actor) {
  auto& st = self->state;
  if (auto i = st.peers.find(info.node); i != st.peers.end()) {
    if (i->second.info.boot == info.boot) {
      // Both ends connected at once, or that node lost us (it stopped, or
      // a link timed out on its side only) and came back: either way the
      // routers exchange their tables again (a sync replaces, so twice is
      // harmless; once too few leaves a directory empty).
      self->send(st.router, peer_up_atom::value, std::move(info));
      return;
    }
    // The node restarted before its old self was found lost.
    st.ctx->log_server->info("cluster node restarted node={} old_boot={:016x} boot={:016x}",
                             logfmt_value(info.node), i->second.info.boot, info.boot);
    self->send(st.router, peer_down_atom::value, i->first, i->second.info.boot);
    st.node_of.erase(i->second.actor.address());
    self->demonitor(i->second.actor);
    st.peers.erase(i);
  }
  self->monitor(actor);
  st.node_of[actor.address()] = info.node;
  st.refusals.erase(info.cluster_addr);
  st.ctx->log_server->info("cluster peer up node={} boot={:016x} cluster_addr={} client_addr={}",
                           logfmt_value(info.node), info.boot, logfmt_value(info.cluster_addr),
                           logfmt_value(info.client_addr));
  self->send(st.router, peer_up_atom::value, info);
  learn(self, info);
  auto name = info.node; // (the key must not be read after the move)
  st.peers.emplace(std::move(name), cluster_state::peer{std::move(info), std::move(actor)});
}

void log_refusal(cluster_ptr self, const std::string& addr, const std::string& why) {
  auto& st = self->state;
  if (why == "self") {
    st.own.insert(addr);
    return;
  }
  auto& last = st.refusals[addr];
  if (last == why)
    return;
  last = why;
  st.ctx->log_server->warn("cluster peer refused addr={} reason={}", logfmt_value(addr),
                           logfmt_value(why));
}

void connect_to(cluster_ptr self, const std::string& addr) {
  auto& st = self->state;
  auto hp = parse_host_port(addr, "", 0);
  if (!hp || hp->port == 0)
    return;
  st.connecting.insert(addr);
  auto timeout
    = std::max<std::chrono::milliseconds>(st.ctx->cfg.cluster_timeout, std::chrono::seconds{1});
  // cluster.tls-*: the openssl manager's middleman actor connects over TLS
  // (to the same BASP broker).
  auto& sys = self->home_system();
  auto mm = sys.has_openssl_manager() ? sys.openssl_manager().actor_handle()
                                      : sys.middleman().actor_handle();
  self->request(mm, timeout, caf::connect_atom::value, hp->host, hp->port)
    .then(
      [self, addr, timeout](const caf::node_id&, caf::strong_actor_ptr& ptr,
                            const std::set<std::string>&) {
        auto remote = caf::actor_cast<caf::actor>(ptr);
        if (!remote) {
          self->state.connecting.erase(addr);
          log_refusal(self, addr, "nothing published there");
          return;
        }
        self->request(remote, timeout, node_hello_atom::value, introduce(self->state))
          .then(
            [self, addr, remote](node_welcome_atom, node_info& info, const std::string& refused) {
              self->state.connecting.erase(addr);
              auto why = refused.empty() ? refusal(self->state, info) : refused;
              if (!why.empty()) {
                log_refusal(self, addr, why);
                return;
              }
              info.cluster_addr = info.cluster_addr.empty() ? addr : info.cluster_addr;
              add_peer(self, std::move(info), remote);
            },
            [self, addr](caf::error& e) {
              self->state.connecting.erase(addr);
              log_refusal(self, addr, self->home_system().render(e));
            });
      },
      [self, addr](caf::error& e) {
        // Not up (yet): tried again at the next tick, quietly. Anything
        // else (a TLS handshake that failed) is said once.
        self->state.connecting.erase(addr);
        if (e != caf::sec::cannot_connect_to_node)
          log_refusal(self, addr, self->home_system().render(e));
      });
}

void connect_all(cluster_ptr self) {
  auto& st = self->state;
  for (auto& addr : st.addresses)
    if (st.own.count(addr) == 0 && st.connecting.count(addr) == 0 && !connected(st, addr))
      connect_to(self, addr);
}

caf::behavior cluster_actor(cluster_ptr self, caf::actor router, context_ptr ctx) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.router = std::move(router);
  self->monitor(st.router); // the server stops: so does this node's link
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.router.address()) {
      self->quit();
      return;
    }
    auto i = st.node_of.find(dm.source);
    if (i == st.node_of.end())
      return;
    auto name = i->second;
    st.node_of.erase(i);
    auto p = st.peers.find(name);
    if (p == st.peers.end())
      return;
    st.ctx->log_server->warn("cluster peer lost node={} boot={:016x} reason={}", logfmt_value(name),
                             p->second.info.boot,
                             logfmt_value(self->home_system().render(dm.reason)));
    self->send(st.router, peer_down_atom::value, name, p->second.info.boot);
    st.peers.erase(p);
  });
  return {
    [self](node_info& me) {
      // From server.cpp once published: who this node is.
      auto& st = self->state;
      st.me = std::move(me);
      st.me.router = st.router;
      for (auto& hp : cluster_peer_list(st.ctx->cfg)) {
        auto a = addr_of(hp);
        if (a != st.me.cluster_addr)
          st.addresses.insert(a);
      }
      self->send(self, tick_atom::value);
    },
    [self](tick_atom) {
      connect_all(self);
      self->delayed_send(self, self->state.ctx->cfg.cluster_retry, tick_atom::value);
    },
    [self](node_hello_atom,
           node_info& info) -> caf::result<node_welcome_atom, node_info, std::string> {
      auto& st = self->state;
      auto remote = caf::actor_cast<caf::actor>(self->current_sender());
      auto why = remote ? refusal(st, info) : std::string{"no sender"};
      if (!why.empty()) {
        if (why != "self")
          st.ctx->log_server->warn("cluster node refused node={} addr={} reason={}",
                                   logfmt_value(info.node), logfmt_value(info.cluster_addr),
                                   logfmt_value(why));
        return {node_welcome_atom::value, node_info{}, why};
      }
      auto answer = introduce(st);
      add_peer(self, std::move(info), remote);
      return {node_welcome_atom::value, std::move(answer), std::string{}};
    },
    [self](drain_atom) { self->quit(); },
  };
}

} // namespace

void register_cluster_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<node_info>("convoke.node_info");
  cfg.add_message_type<agent_claim>("convoke.agent_claim");
  cfg.add_message_type<std::vector<agent_claim>>("convoke.agent_claims");
  cfg.add_message_type<relay_batch>("convoke.relay_batch");
  cfg.add_message_type<notice_request>("convoke.notice_request");
}

caf::actor spawn_cluster(caf::actor_system& sys, caf::actor router, context_ptr ctx) {
  return sys.middleman().spawn_broker(cluster_actor, std::move(router), std::move(ctx));
}

} // namespace convoke::server::internal
