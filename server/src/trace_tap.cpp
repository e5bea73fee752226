#include "trace_tap.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "convoke/proto/rules.hpp"
#include "convoke/proto/subject.hpp"
#include "convoke/proto/trace_wire.hpp"
#include "convoke/server/error.hpp"

namespace convoke::server {

namespace {

constexpr uint32_t bit(trace::kind k) noexcept {
  return uint32_t{1} << static_cast<unsigned>(k);
}

bool contains(const std::vector<std::string>& sorted, const std::string& name) {
  return !name.empty() && std::binary_search(sorted.begin(), sorted.end(), name);
}

bool any_of_names(const std::vector<std::string>& sorted, const std::vector<std::string>& names) {
  for (auto& n : names)
    if (contains(sorted, n))
      return true;
  return false;
}

/// What an event holds in memory (for the pending batch's byte bound).
size_t footprint(const trace::event& ev) {
  size_t n = sizeof(trace::event) + ev.boot.size() + ev.sender.size() + ev.recipient.size()
             + ev.route.size() + ev.trace_id.size() + ev.span_id.size() + ev.payload.size()
             + ev.reason.size() + ev.address.size() + ev.identity.size() + ev.nodes.size();
  for (auto& r : ev.recipients)
    n += sizeof(std::string) + r.size();
  return n;
}

std::string known_kinds() {
  std::string out;
  for (unsigned i = 0; i <= static_cast<unsigned>(trace::kind::audience); ++i) {
    if (!out.empty())
      out += ", ";
    out += proto::trace_kind_name(static_cast<trace::kind>(i));
  }
  return out;
}

tl::unexpected<error> bad_filter(std::string text) {
  return fail(errc::invalid_value, std::move(text));
}

} // namespace

bool tap_filter::wants(trace::kind k) const noexcept {
  if (kinds == 0)
    return k != trace::kind::audience;
  return (kinds & bit(k)) != 0;
}

bool tap_filter::matches(const trace::event& ev, const std::vector<std::string>* members) const {
  if (!wants(ev.what))
    return false;
  if (!trace_id.empty() && ev.trace_id != trace_id)
    return false;
  if (!routes.empty()) {
    if (ev.route.empty())
      return false;
    bool hit = false;
    for (auto& p : routes)
      if (proto::pattern_matches(p, ev.route)) {
        hit = true;
        break;
      }
    if (!hit)
      return false;
  }
  if (!agents.empty()) {
    if (contains(agents, ev.sender) || contains(agents, ev.recipient)
        || any_of_names(agents, ev.recipients))
      return true;
    return members != nullptr && any_of_names(agents, *members);
  }
  return true;
}

expected<tap_filter> parse_tap_filter(const tap_filter_spec& spec) {
  tap_filter f;
  if (spec.agents.size() > max_filter_agents)
    return bad_filter(fmt::format("too many agents in the filter: {}; at most {}",
                                  spec.agents.size(), max_filter_agents));
  if (spec.routes.size() > max_filter_routes)
    return bad_filter(fmt::format("too many routes in the filter: {}; at most {}",
                                  spec.routes.size(), max_filter_routes));
  if (spec.events.size() > max_filter_events)
    return bad_filter(fmt::format("too many event kinds in the filter: {}; at most {}",
                                  spec.events.size(), max_filter_events));
  if (spec.trace_id.size() > max_filter_trace_id)
    return bad_filter(
      fmt::format("trace id is {} bytes; at most {}", spec.trace_id.size(), max_filter_trace_id));
  for (auto& a : spec.agents) {
    if (auto ok = proto::check_agent_name(a); !ok)
      return bad_filter(fmt::format("invalid agent name '{}' in the filter: {}",
                                    a.substr(0, proto::max_name_length + 1), ok.error().text));
    f.agents.push_back(a);
  }
  std::sort(f.agents.begin(), f.agents.end());
  f.agents.erase(std::unique(f.agents.begin(), f.agents.end()), f.agents.end());
  for (auto& r : spec.routes) {
    if (auto ok = proto::check_route_pattern(r); !ok)
      return bad_filter(fmt::format("invalid route pattern '{}' in the filter: {}",
                                    r.substr(0, proto::max_route_length + 1), ok.error().text));
    if (std::find(f.routes.begin(), f.routes.end(), r) == f.routes.end())
      f.routes.push_back(r);
  }
  for (auto& e : spec.events) {
    auto k = proto::trace_kind_from_name(e);
    if (!k)
      return bad_filter(fmt::format("unknown event kind '{}' in the filter (known: {})",
                                    e.substr(0, 64), known_kinds()));
    f.kinds |= bit(*k);
  }
  f.trace_id = spec.trace_id;
  f.payload_bytes = spec.payload_bytes;
  return f;
}

// -- trace_tap -------------------------------------------------------------------

trace_tap::trace_tap(tap_limits limits, std::function<void(bool)> on_active)
  : limits_(limits), on_active_(std::move(on_active)) {}

trace_tap::~trace_tap() = default;

expected<uint64_t> trace_tap::subscribe(tap_filter filter, std::shared_ptr<tap_subscriber> s) {
  std::lock_guard guard{mtx_};
  if (registered_.size() >= limits_.max_subscribers)
    return fail(errc::invalid_config,
                fmt::format("too many observers ({}; trace.max-observers)", registered_.size()));
  auto x = std::make_unique<sub>();
  x->id = next_id_++;
  x->filter = std::move(filter);
  x->target = std::move(s);
  registered_.emplace(x->id, x->filter.payload_bytes);
  payload_wanted_.store(
    std::max(payload_wanted_.load(std::memory_order_relaxed), x->filter.payload_bytes),
    std::memory_order_relaxed);
  auto id = x->id;
  added_.push_back(std::move(x));
  if (!active_.exchange(true, std::memory_order_relaxed) && on_active_)
    on_active_(true);
  changed_.store(true, std::memory_order_release);
  return id;
}

void trace_tap::unsubscribe(uint64_t id) {
  std::unique_ptr<sub> gone; // released outside the lock
  std::lock_guard guard{mtx_};
  if (registered_.erase(id) == 0)
    return;
  auto i = std::find_if(added_.begin(), added_.end(), [&](auto& x) { return x->id == id; });
  if (i != added_.end()) {
    gone = std::move(*i);
    added_.erase(i);
  } else {
    removed_.push_back(id);
  }
  uint32_t wanted = 0;
  for (auto& [_, bytes] : registered_)
    wanted = std::max(wanted, bytes);
  payload_wanted_.store(wanted, std::memory_order_relaxed);
  changed_.store(true, std::memory_order_release);
  if (registered_.empty() && active_.exchange(false, std::memory_order_relaxed) && on_active_)
    on_active_(false);
}

size_t trace_tap::subscribers() const {
  std::lock_guard guard{mtx_};
  return registered_.size();
}

void trace_tap::apply_changes() {
  if (!changed_.load(std::memory_order_acquire))
    return;
  std::vector<std::unique_ptr<sub>> added;
  std::vector<uint64_t> removed;
  {
    std::lock_guard guard{mtx_};
    added.swap(added_);
    removed.swap(removed_);
    changed_.store(false, std::memory_order_relaxed);
  }
  if (!removed.empty())
    subs_.erase(std::remove_if(subs_.begin(), subs_.end(),
                               [&](auto& x) {
                                 return std::find(removed.begin(), removed.end(), x->id)
                                        != removed.end();
                               }),
                subs_.end());
  for (auto& x : added)
    subs_.push_back(std::move(x));
}

bool trace_tap::enqueue(sub& s, const trace::event& ev) {
  auto cap = s.filter.payload_bytes;
  auto bytes = footprint(ev) - ev.payload.size() + std::min<size_t>(ev.payload.size(), cap);
  if (s.pending.size() >= limits_.max_pending_events
      || s.pending_bytes + bytes > limits_.max_pending_bytes) {
    ++s.missed;
    missed_total_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  auto& copy = s.pending.emplace_back(ev);
  if (cap == 0) {
    copy.payload.clear();
    copy.payload_truncated = false;
  } else if (copy.payload.size() > cap) {
    copy.payload.resize(cap);
    copy.payload_truncated = true;
  }
  s.pending_bytes += bytes;
  return true;
}

void trace_tap::remember_audience(const trace::event& ev) {
  auto [it, fresh] = audiences_.insert_or_assign(ev.audience, ev);
  if (fresh) {
    audience_order_.push_back(ev.audience);
    while (audience_order_.size() > limits_.max_audiences) {
      audiences_.erase(audience_order_.front());
      audience_order_.pop_front();
    }
  } else {
    // Redefined: everybody gets the new definition before its next use.
    for (auto& s : subs_)
      s->audiences_sent.erase(ev.audience);
  }
}

void trace_tap::publish(const trace::event& ev) {
  apply_changes();
  if (ev.what == trace::kind::audience) {
    if (ev.audience == 0)
      return;
    remember_audience(ev);
    for (auto& s : subs_)
      if ((s->filter.kinds & bit(trace::kind::audience)) != 0
          && s->filter.matches(ev, &ev.recipients) && enqueue(*s, ev))
        s->audiences_sent.insert(ev.audience);
    return;
  }
  const trace::event* def = nullptr;
  if (ev.audience != 0)
    if (auto i = audiences_.find(ev.audience); i != audiences_.end())
      def = &i->second;
  for (auto& s : subs_) {
    if (!s->filter.matches(ev, def != nullptr ? &def->recipients : nullptr))
      continue;
    if (def != nullptr && s->audiences_sent.count(ev.audience) == 0) {
      if (!enqueue(*s, *def)) {
        ++s->missed; // the event itself is lost too: it cannot be resolved
        missed_total_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      // Bounded: forgetting what was sent only costs a repeated definition.
      if (s->audiences_sent.size() >= 2 * limits_.max_audiences)
        s->audiences_sent.clear();
      s->audiences_sent.insert(ev.audience);
    }
    enqueue(*s, ev);
  }
}

void trace_tap::end_pass() {
  apply_changes();
  for (auto& s : subs_) {
    if (s->pending.empty() && s->missed == 0)
      continue;
    if (!s->target->ready())
      continue;
    auto batch = std::move(s->pending);
    s->pending = {};
    s->pending_bytes = 0;
    auto missed = std::exchange(s->missed, 0);
    s->target->deliver(std::move(batch), missed);
  }
}

} // namespace convoke::server
