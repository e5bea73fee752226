#include "trace_recent.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "convoke/common/text.hpp"
#include "convoke/proto/subject.hpp"

namespace convoke::server {

namespace {

expected<uint64_t> parse_number(const std::string& name, const std::string& text, uint64_t max) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
    return fail(std::errc::invalid_argument,
                fmt::format("{}: '{}' is not a non-negative integer", name, text.substr(0, 64)));
  if (v > max)
    return fail(std::errc::invalid_argument, fmt::format("{}: {} is above {}", name, v, max));
  return v;
}

expected<std::string> parse_trace_id(const std::string& text) {
  // W3C trace ids are 16 bytes (32 hex digits); shorter ids of other
  // tracers are accepted, as the envelope's field is.
  if (text.empty() || text.size() % 2 != 0 || text.size() > 32)
    return fail(std::errc::invalid_argument,
                fmt::format("trace: '{}' is not a trace id (2 to 32 hex digits, an even number)",
                            text.substr(0, 64)));
  auto bytes = from_hex(text);
  if (!bytes)
    return fail(std::errc::invalid_argument,
                fmt::format("trace: '{}' has a character that is not a hex digit", text));
  return std::move(*bytes);
}

bool printable(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 127; });
}

/// Values of a parameter that lists names with ','.
expected<void> split_into(const std::string& name, const std::string& value,
                          std::vector<std::string>& out) {
  size_t start = 0;
  while (start <= value.size()) {
    auto comma = value.find(',', start);
    auto part = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (part.empty())
      return fail(std::errc::invalid_argument, fmt::format("{}: an empty name", name));
    if (part.size() > 128)
      return fail(
        std::errc::invalid_argument,
        fmt::format("{}: '{}...' is longer than 128 characters", name, part.substr(0, 32)));
    if (!printable(part))
      return fail(std::errc::invalid_argument,
                  fmt::format("{}: '{}' has spaces or control characters", name, part));
    if (out.size() >= tracez_query::max_values)
      return fail(std::errc::invalid_argument,
                  fmt::format("{}: more than {} values", name, tracez_query::max_values));
    out.push_back(std::move(part));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return {};
}

bool names(const trace::event& ev, const std::vector<std::string>* audience,
           const std::string& agent) {
  return ev.sender == agent || ev.recipient == agent
         || std::find(ev.recipients.begin(), ev.recipients.end(), agent) != ev.recipients.end()
         || (audience && std::binary_search(audience->begin(), audience->end(), agent));
}

} // namespace

expected<tracez_query> parse_tracez_query(const std::multimap<std::string, std::string>& params,
                                          bool conversation) {
  tracez_query q;
  for (auto& [k, v] : params) {
    if (k == "after" && !conversation) {
      auto n = parse_number("after", v, UINT64_MAX);
      if (!n)
        return tl::unexpected{n.error()};
      q.after = *n;
      q.has_after = true;
    } else if (k == "limit") {
      auto n = parse_number("limit", v, tracez_query::max_limit);
      if (!n)
        return tl::unexpected{n.error()};
      if (*n == 0)
        return fail(std::errc::invalid_argument, "limit: 0 is below 1");
      q.limit = static_cast<size_t>(*n);
    } else if (k == "agent" && !conversation) {
      if (auto r = split_into("agent", v, q.agents); !r)
        return tl::unexpected{r.error()};
    } else if (k == "route" && !conversation) {
      if (auto r = split_into("route", v, q.routes); !r)
        return tl::unexpected{r.error()};
    } else if (k == "trace") {
      if (!q.trace_id.empty())
        return fail(std::errc::invalid_argument, "trace: given more than once");
      auto id = parse_trace_id(v);
      if (!id)
        return tl::unexpected{id.error()};
      q.trace_id = std::move(*id);
    } else {
      return fail(std::errc::invalid_argument,
                  fmt::format("unknown parameter '{}' (known: {})", k.substr(0, 64),
                              conversation ? "trace, limit" : "after, agent, route, trace, limit"));
    }
  }
  if (conversation && q.trace_id.empty())
    return fail(std::errc::invalid_argument, "trace: required (the conversation's trace id, hex)");
  return q;
}

recent_events::recent_events(limits l) : limits_(l) {
  limits_.capacity = std::max<size_t>(limits_.capacity, 1);
  limits_.max_audiences = std::max<size_t>(limits_.max_audiences, 1);
}

void recent_events::add(std::vector<trace::event>&& batch, uint64_t missed) {
  std::lock_guard lock{mutex_};
  missed_ += missed;
  for (auto& ev : batch) {
    if (!boot_.empty() && !ev.boot.empty() && ev.boot != boot_) {
      // Another server boot (cannot happen within one process; keeps the
      // seq order the queries rely on should a source mix boots).
      ring_.clear();
      audiences_.clear();
      audience_names_ = 0;
    }
    if (!ev.boot.empty())
      boot_ = ev.boot;
    if (ev.seq <= last_seq_ && !ring_.empty())
      continue; // out of order or repeated: queries need ascending seq
    last_seq_ = ev.seq;
    if (ev.what == trace::kind::audience) {
      // Sorted (agent filters search them); the oldest numbers go first
      // when there are too many, or too many names.
      std::sort(ev.recipients.begin(), ev.recipients.end());
      auto& slot = audiences_[ev.audience];
      audience_names_ -= slot.size();
      slot = std::move(ev.recipients);
      audience_names_ += slot.size();
      while (audiences_.size() > 1
             && (audiences_.size() > limits_.max_audiences
                 || audience_names_ > limits_.max_audience_names)) {
        auto oldest = audiences_.begin();
        audience_names_ -= oldest->second.size();
        audiences_.erase(oldest);
      }
      continue;
    }
    ring_.push_back(std::move(ev));
    if (ring_.size() > limits_.capacity)
      ring_.pop_front();
  }
}

void recent_events::clear() {
  std::lock_guard lock{mutex_};
  ring_.clear();
  audiences_.clear();
  audience_names_ = 0;
  missed_ = 0;
  last_seq_ = 0;
}

size_t recent_events::size() const {
  std::lock_guard lock{mutex_};
  return ring_.size();
}

const std::vector<std::string>* recent_events::audience_of(const trace::event& ev) const {
  if (ev.audience == 0)
    return nullptr;
  auto it = audiences_.find(ev.audience);
  return it == audiences_.end() ? nullptr : &it->second;
}

void recent_events::take(answer& a, const trace::event& ev) const {
  a.events.push_back(ev);
  auto& out = a.events.back();
  size_t more = 0;
  if (auto* members = audience_of(ev); members && out.recipients.empty()) {
    auto shown = std::min(members->size(), limits_.max_recipients_shown);
    out.recipients.assign(members->begin(), members->begin() + static_cast<ptrdiff_t>(shown));
    more = members->size() - shown;
  } else if (out.recipients.size() > limits_.max_recipients_shown) {
    more = out.recipients.size() - limits_.max_recipients_shown;
    out.recipients.resize(limits_.max_recipients_shown);
  }
  a.recipients_more.push_back(more);
}

bool recent_events::matches(const trace::event& ev, const tracez_query& q) const {
  if (!q.trace_id.empty() && ev.trace_id != q.trace_id)
    return false;
  if (!q.agents.empty()
      && std::none_of(
        q.agents.begin(), q.agents.end(),
        [&, audience = audience_of(ev)](const std::string& a) { return names(ev, audience, a); }))
    return false;
  if (!q.routes.empty()
      && std::none_of(q.routes.begin(), q.routes.end(), [&](const std::string& r) {
           return !ev.route.empty() && proto::pattern_matches(r, ev.route);
         }))
    return false;
  return true;
}

recent_events::answer recent_events::query(const tracez_query& q) const {
  std::lock_guard lock{mutex_};
  answer a;
  a.missed = missed_;
  a.boot = boot_;
  a.oldest = ring_.empty() ? 0 : ring_.front().seq;
  if (!q.has_after) {
    std::vector<const trace::event*> newest;
    for (auto it = ring_.rbegin(); it != ring_.rend() && newest.size() < q.limit; ++it)
      if (matches(*it, q))
        newest.push_back(&*it);
    for (auto it = newest.rbegin(); it != newest.rend(); ++it)
      take(a, **it);
    a.next = last_seq_;
    return a;
  }
  auto it = std::upper_bound(ring_.begin(), ring_.end(), q.after,
                             [](uint64_t s, const trace::event& ev) { return s < ev.seq; });
  a.next = q.after;
  for (; it != ring_.end(); ++it) {
    if (a.events.size() == q.limit) {
      a.more = true;
      break;
    }
    if (matches(*it, q))
      take(a, *it);
    a.next = it->seq;
  }
  if (!a.more)
    a.next = last_seq_; // everything up to the newest was looked at
  return a;
}

recent_events::answer recent_events::conversation(const tracez_query& q) const {
  auto copy = q;
  copy.has_after = false;
  copy.agents.clear();
  copy.routes.clear();
  return query(copy);
}

std::string recent_events::to_json(const answer& a, std::string_view trace_hex) {
  std::string out;
  out.reserve(128 + a.events.size() * 320);
  out += "{\"boot\":";
  append_json_string(out, a.boot);
  if (!trace_hex.empty()) {
    out += ",\"trace\":";
    append_json_string(out, trace_hex);
  }
  out += fmt::format(",\"next\":{},\"missed\":{},\"oldest\":{},\"more\":{},\"events\":[", a.next,
                     a.missed, a.oldest, a.more);
  for (size_t i = 0; i < a.events.size(); ++i) {
    if (i > 0)
      out.push_back(',');
    // Exactly a JSON trace line (trace::append_json), plus the recipients
    // not shown.
    trace::append_json(out, a.events[i]);
    if (i < a.recipients_more.size() && a.recipients_more[i] > 0) {
      out.pop_back();
      out += fmt::format(",\"recipients_more\":{}}}", a.recipients_more[i]);
    }
  }
  out += "]}\n";
  return out;
}

recent_feed::recent_feed(source src, clock::duration idle, size_t capacity)
  : src_(std::move(src)), idle_(idle), ring_(std::make_shared<recent_events>(capacity)) {}

recent_feed::~recent_feed() {
  std::lock_guard lock{mutex_};
  if (subscribed_)
    src_.unsubscribe(id_);
}

expected<std::shared_ptr<recent_events>> recent_feed::touch(clock::time_point now) {
  std::lock_guard lock{mutex_};
  last_ = now;
  if (!subscribed_) {
    auto id = src_.subscribe(ring_);
    if (!id)
      return tl::unexpected{id.error()};
    id_ = *id;
    subscribed_ = true;
  }
  return ring_;
}

void recent_feed::expire(clock::time_point now) {
  std::lock_guard lock{mutex_};
  if (!subscribed_ || now - last_ < idle_)
    return;
  src_.unsubscribe(id_);
  subscribed_ = false;
  ring_->clear();
}

bool recent_feed::subscribed() const {
  std::lock_guard lock{mutex_};
  return subscribed_;
}

} // namespace convoke::server
