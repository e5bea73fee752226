#pragma once

// Registry and routing decisions of the router, free of CAF so that unit
// tests can reach it directly. `Handle` is whatever the router uses to reach
// a session (a caf::actor in the server, an int in tests).
//
// Semantics:
// - names are unique; lookups are exact;
// - a broadcast reaches every other agent without subscriptions (unless
//   its identity's subscribe right is restricted), plus the
//   agents with a subscription that matches its route (subject.hpp: "*" is
//   one token, a final ">" one or more); each of them once, however many of
//   its subscriptions match; never the sender;
// - a direct message reaches the named agent regardless of subscriptions.
//
// Exact subscriptions live in a hash map (one lookup per broadcast).
// Pattern subscriptions live in a token trie (literal children, a "*"
// child, a ">" list per node), walked only while pattern subscriptions
// exist; an agent matched twice is recognised by an epoch stamp in its
// entry, so a broadcast allocates nothing beyond `out`.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "convoke/proto/subject.hpp"

namespace convoke::server {

struct string_hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

/// Replies an agent may send although its `send` right does not cover the
/// recipient: one per request it received (requester name, request id),
/// used up by the reply. Bounded: beyond `max` the oldest is forgotten.
class reply_grants {
public:
  static constexpr size_t max = 256;

  void grant(std::string_view requester, uint64_t request_id) {
    auto k = key(requester, request_id);
    if (!set_.insert(k).second)
      return;
    order_.push_back(std::move(k));
    if (order_.size() > max) {
      set_.erase(order_.front());
      order_.pop_front();
    }
  }

  /// Uses up the grant for a reply to `requester`'s `request_id`; false if
  /// there is none. (The key stays in the order queue until it ages out.)
  bool use(std::string_view requester, uint64_t request_id) {
    return set_.erase(key(requester, request_id)) > 0;
  }

  size_t size() const noexcept {
    return set_.size();
  }

private:
  static std::string key(std::string_view requester, uint64_t request_id) {
    std::string k{requester};
    k.push_back('\0');
    k.append(reinterpret_cast<const char*>(&request_id), sizeof request_id);
    return k;
  }

  std::unordered_set<std::string> set_;
  std::deque<std::string> order_;
};

template <class Handle>
class routing_table {
public:
  struct entry {
    uint64_t session_id = 0;
    std::string name;
    std::string resume_token;
    /// The identity it authenticated as (empty without auth.credentials): a
    /// take-over by resume token must come from the same identity.
    std::string identity;
    Handle handle{};
    std::unordered_set<std::string, string_hash, std::equal_to<>> routes;
    /// Its identity may not subscribe to everything: without subscriptions
    /// it receives no broadcasts (never "all of them").
    bool restricted = false;
    /// Its identity may receive direct messages.
    bool receive = true;
    /// Its identity may not send to everyone: each request it receives
    /// grants it one reply to the requester (see reply_grants).
    bool send_restricted = false;
    reply_grants grants;
    /// The last broadcast that picked this entry (see broadcast_targets).
    uint64_t picked = 0;
    /// Cluster (docs/cluster.md): when the name was claimed (unix ns), how
    /// many take-overs it has been through, and a digest of its resume
    /// token (other nodes check take-overs against it).
    int64_t since_ns = 0;
    uint64_t generation = 0;
    std::string token_digest;
  };

  size_t size() const noexcept {
    return sessions_.size();
  }

  entry* find(uint64_t sid) {
    auto i = sessions_.find(sid);
    return i == sessions_.end() ? nullptr : i->second.get();
  }

  entry* find_name(std::string_view name) {
    auto i = names_.find(name);
    return i == names_.end() ? nullptr : i->second;
  }

  /// Adds an agent; the caller has checked that the name is free.
  entry& add(uint64_t sid, std::string name, std::string resume_token, Handle handle,
             const std::vector<std::string>& routes, bool restricted = false) {
    auto e = std::make_unique<entry>();
    e->restricted = restricted;
    e->session_id = sid;
    e->name = std::move(name);
    e->resume_token = std::move(resume_token);
    e->handle = std::move(handle);
    auto& ref = *e;
    names_.emplace(ref.name, &ref);
    sorted_.emplace(ref.name, &ref);
    sessions_.emplace(sid, std::move(e));
    if (routes.empty() && !restricted)
      unsubscribed_.push_back(&ref);
    for (auto& r : routes)
      subscribe(ref, r);
    return ref;
  }

  void remove(uint64_t sid) {
    auto i = sessions_.find(sid);
    if (i == sessions_.end())
      return;
    auto& e = *i->second;
    if (e.routes.empty() && !e.restricted)
      erase_from(unsubscribed_, &e);
    for (auto& r : e.routes)
      drop(e, r);
    names_.erase(e.name);
    sorted_.erase(e.name);
    sessions_.erase(i);
  }

  /// Adds a subscription; false if it already existed.
  bool subscribe(entry& e, const std::string& route) {
    if (!e.routes.insert(route).second)
      return false;
    if (e.routes.size() == 1 && !e.restricted)
      erase_from(unsubscribed_, &e);
    if (proto::is_pattern(route)) {
      trie_insert(route).push_back(&e);
      ++patterns_;
    } else {
      by_route_[route].push_back(&e);
    }
    return true;
  }

  /// Removes a subscription; false if it did not exist.
  bool unsubscribe(entry& e, const std::string& route) {
    auto i = e.routes.find(route);
    if (i == e.routes.end())
      return false;
    drop(e, route);
    e.routes.erase(i);
    if (e.routes.empty() && !e.restricted)
      unsubscribed_.push_back(&e);
    return true;
  }

  /// Appends the receivers of a broadcast from `sender` on `route` (empty =
  /// no route) to `out`, each once.
  void broadcast_targets(uint64_t sender, std::string_view route, std::vector<entry*>& out) {
    for (auto e : unsubscribed_)
      if (e->session_id != sender)
        out.push_back(e);
    if (route.empty())
      return;
    auto i = by_route_.find(route);
    if (patterns_ == 0) { // today's cost: one lookup
      if (i != by_route_.end())
        for (auto e : i->second)
          if (e->session_id != sender)
            out.push_back(e);
      return;
    }
    ++epoch_;
    if (i != by_route_.end())
      for (auto e : i->second)
        pick(e, sender, out);
    walk(root_, route, false, sender, out);
  }

  /// Whether a broadcast on `route` from an agent outside this table has
  /// any receiver in it (a cluster node's interest in a route).
  bool wants(std::string_view route) {
    if (!unsubscribed_.empty())
      return true;
    if (route.empty())
      return false;
    if (by_route_.find(route) != by_route_.end())
      return true;
    if (patterns_ == 0)
      return false;
    wants_scratch_.clear();
    broadcast_targets(0, route, wants_scratch_);
    return !wants_scratch_.empty();
  }

  /// Number of pattern subscriptions.
  size_t pattern_count() const noexcept {
    return patterns_;
  }

  /// Number of trie nodes below the root (0 without pattern subscriptions).
  size_t trie_nodes() const noexcept {
    return nodes_;
  }

  /// Appends to `out` the names (bytewise sorted) that start with `prefix`,
  /// sort after `after`, and pass `visible(entry)`, at most `limit` of them.
  /// Returns true if more names match beyond those (truncated). Costs
  /// O(log n) plus the names looked at: with a restrictive `visible`, that
  /// may be every name under the prefix.
  template <class Visible>
  bool list_names(std::string_view prefix, std::string_view after, size_t limit, Visible&& visible,
                  std::vector<std::string>& out) const {
    auto i
      = after.empty() || after < prefix ? sorted_.lower_bound(prefix) : sorted_.upper_bound(after);
    for (; i != sorted_.end(); ++i) {
      auto& name = i->first;
      if (name.compare(0, prefix.size(), prefix) != 0)
        return false; // past the names with this prefix
      if (!visible(*i->second))
        continue;
      if (out.size() >= limit)
        return true;
      out.push_back(name);
    }
    return false;
  }

  template <class F>
  void for_each(F&& f) {
    for (auto& kv : sessions_)
      f(*kv.second);
  }

private:
  /// A trie node: the subscriptions whose pattern ends here (`here`), those
  /// whose pattern continues with a final ">" (`rest`), and the next tokens.
  struct node {
    std::unordered_map<std::string, std::unique_ptr<node>, string_hash, std::equal_to<>> literal;
    std::unique_ptr<node> star;
    std::vector<entry*> here;
    std::vector<entry*> rest;

    bool empty() const noexcept {
      return literal.empty() && !star && here.empty() && rest.empty();
    }
  };

  /// Splits off the first token of `s`; `last` tells whether it was the last.
  static std::string_view next_token(std::string_view& s, bool& last) noexcept {
    auto dot = s.find('.');
    std::string_view tok = s.substr(0, dot);
    last = dot == std::string_view::npos;
    s = last ? std::string_view{} : s.substr(dot + 1);
    return tok;
  }

  static bool is_tail(std::string_view tok, bool last) noexcept {
    return last && tok == ">";
  }

  void pick(entry* e, uint64_t sender, std::vector<entry*>& out) {
    if (e->session_id == sender || e->picked == epoch_)
      return;
    e->picked = epoch_;
    out.push_back(e);
  }

  /// Collects the subscribers under `n` matching the tokens in `rest`
  /// (`done`: no token left).
  void walk(const node& n, std::string_view rest, bool done, uint64_t sender,
            std::vector<entry*>& out) {
    if (done) {
      for (auto e : n.here)
        pick(e, sender, out);
      return;
    }
    for (auto e : n.rest) // ">" takes the one or more tokens left
      pick(e, sender, out);
    bool last = false;
    auto tok = next_token(rest, last);
    if (!n.literal.empty())
      if (auto i = n.literal.find(tok); i != n.literal.end())
        walk(*i->second, rest, last, sender, out);
    if (n.star)
      walk(*n.star, rest, last, sender, out);
  }

  /// The list a pattern's subscribers go to, creating nodes on the way.
  std::vector<entry*>& trie_insert(std::string_view pattern) {
    node* n = &root_;
    bool last = false;
    while (true) {
      auto tok = next_token(pattern, last);
      if (is_tail(tok, last))
        return n->rest;
      std::unique_ptr<node>* child;
      if (tok == "*") {
        child = &n->star;
      } else {
        auto i = n->literal.find(tok);
        if (i == n->literal.end())
          i = n->literal.emplace(std::string{tok}, nullptr).first;
        child = &i->second;
      }
      if (!*child) {
        *child = std::make_unique<node>();
        ++nodes_;
      }
      n = child->get();
      if (last)
        return n->here;
    }
  }

  /// Takes `e` out of the trie for `pattern` and prunes the nodes left empty.
  void trie_erase(entry& e, std::string_view pattern) {
    // The path: each node with the token that leads to the next one.
    std::vector<std::pair<node*, std::string_view>> path;
    node* n = &root_;
    bool last = false;
    std::vector<entry*>* list = nullptr;
    while (list == nullptr) {
      auto tok = next_token(pattern, last);
      if (is_tail(tok, last)) {
        list = &n->rest;
        break;
      }
      node* child = nullptr;
      if (tok == "*") {
        child = n->star.get();
      } else if (auto i = n->literal.find(tok); i != n->literal.end()) {
        child = i->second.get();
      }
      if (child == nullptr)
        return; // not subscribed
      path.emplace_back(n, tok);
      n = child;
      if (last)
        list = &n->here;
    }
    erase_from(*list, &e);
    // Prune bottom-up: `n` is the deepest node on the path.
    while (!path.empty() && n->empty()) {
      auto [parent, tok] = path.back();
      path.pop_back();
      if (tok == "*")
        parent->star.reset();
      else
        parent->literal.erase(parent->literal.find(tok));
      --nodes_;
      n = parent;
    }
  }

  /// Takes the subscription `route` of `e` out of the indexes (not out of
  /// `e.routes`).
  void drop(entry& e, const std::string& route) {
    if (proto::is_pattern(route)) {
      trie_erase(e, route);
      --patterns_;
      return;
    }
    if (auto j = by_route_.find(route); j != by_route_.end()) {
      erase_from(j->second, &e);
      if (j->second.empty())
        by_route_.erase(j);
    }
  }

  static void erase_from(std::vector<entry*>& xs, entry* e) {
    auto i = std::find(xs.begin(), xs.end(), e);
    if (i != xs.end()) {
      *i = xs.back();
      xs.pop_back();
    }
  }

  std::unordered_map<uint64_t, std::unique_ptr<entry>> sessions_;
  std::unordered_map<std::string, entry*, string_hash, std::equal_to<>> names_;
  /// The same names in order, for listing (ListAgents) by prefix and page.
  std::map<std::string, entry*, std::less<>> sorted_;
  /// Agents without any subscription and not restricted: they get every
  /// broadcast.
  std::vector<entry*> unsubscribed_;
  std::vector<entry*> wants_scratch_;
  std::unordered_map<std::string, std::vector<entry*>, string_hash, std::equal_to<>> by_route_;
  node root_;
  size_t patterns_ = 0;
  size_t nodes_ = 0;
  uint64_t epoch_ = 0;
};

} // namespace convoke::server
