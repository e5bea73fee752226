#pragma once

// Registry and routing decisions of the router, free of CAF so that unit
// tests can reach it directly. `Handle` is whatever the router uses to reach
// a session (a caf::actor in the server, an int in tests).
//
// Semantics:
// - names are unique; lookups are exact;
// - a broadcast reaches every other agent without subscriptions, plus the
//   agents subscribed to its route (exact match); never the sender;
// - a direct message reaches the named agent regardless of subscriptions.

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

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
  static constexpr size_t max = 1024;

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
    sessions_.emplace(sid, std::move(e));
    if (routes.empty() && !restricted)
      wildcard_.push_back(&ref);
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
      erase_from(wildcard_, &e);
    for (auto& r : e.routes)
      if (auto j = by_route_.find(r); j != by_route_.end()) {
        erase_from(j->second, &e);
        if (j->second.empty())
          by_route_.erase(j);
      }
    names_.erase(e.name);
    sessions_.erase(i);
  }

  /// Adds a subscription; false if it already existed.
  bool subscribe(entry& e, const std::string& route) {
    if (!e.routes.insert(route).second)
      return false;
    if (e.routes.size() == 1 && !e.restricted)
      erase_from(wildcard_, &e);
    by_route_[route].push_back(&e);
    return true;
  }

  /// Removes a subscription; false if it did not exist.
  bool unsubscribe(entry& e, const std::string& route) {
    auto i = e.routes.find(route);
    if (i == e.routes.end())
      return false;
    e.routes.erase(i);
    if (auto j = by_route_.find(route); j != by_route_.end()) {
      erase_from(j->second, &e);
      if (j->second.empty())
        by_route_.erase(j);
    }
    if (e.routes.empty() && !e.restricted)
      wildcard_.push_back(&e);
    return true;
  }

  /// Appends the receivers of a broadcast from `sender` on `route` (empty =
  /// no route) to `out`.
  void broadcast_targets(uint64_t sender, std::string_view route, std::vector<entry*>& out) const {
    for (auto e : wildcard_)
      if (e->session_id != sender)
        out.push_back(e);
    if (route.empty())
      return;
    if (auto i = by_route_.find(route); i != by_route_.end())
      for (auto e : i->second)
        if (e->session_id != sender)
          out.push_back(e);
  }

  template <class F>
  void for_each(F&& f) {
    for (auto& kv : sessions_)
      f(*kv.second);
  }

private:
  static void erase_from(std::vector<entry*>& xs, entry* e) {
    auto i = std::find(xs.begin(), xs.end(), e);
    if (i != xs.end()) {
      *i = xs.back();
      xs.pop_back();
    }
  }

  std::unordered_map<uint64_t, std::unique_ptr<entry>> sessions_;
  std::unordered_map<std::string, entry*, string_hash, std::equal_to<>> names_;
  std::vector<entry*> wildcard_;
  std::unordered_map<std::string, std::vector<entry*>, string_hash, std::equal_to<>> by_route_;
};

} // namespace convoke::server
