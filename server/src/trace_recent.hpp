#pragma once

// The web view's memory (GET /tracez, GET /trace): the last N trace events
// the live tap delivered, filtered per request. CAF-free and socket-free:
// the tap's writer thread adds batches, the admin listener's workers query
// it (tests/unit/trace_recent_test.cpp). docs/observing-web.md describes
// the endpoints.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "convoke/common/error.hpp"
#include "convoke/common/trace_event.hpp"

namespace convoke::server {

/// GET /tracez parameters. Each filter, when given, must match; an agent
/// matches the sender, the direct recipient or any recipient of a
/// broadcast (as the tap's filter does).
struct tracez_query {
  /// Only events with seq > after. 0 (absent): the newest `limit` events.
  uint64_t after = 0;
  bool has_after = false;
  /// Exact agent names (the parameter may repeat, or list names with ',').
  std::vector<std::string> agents;
  /// Route patterns, the router's syntax ("weather.*", "news.>").
  std::vector<std::string> routes;
  /// Raw trace id bytes (the parameter is hex).
  std::string trace_id;
  size_t limit = 1000;

  static constexpr size_t max_limit = 1000;
  /// Filter values per parameter, and their length: one request stays cheap.
  static constexpr size_t max_values = 64;
};

/// Parses the query parameters of /tracez; unknown parameters and bad
/// values are errors whose text says which. `conversation`: the parameters
/// of /tracez/conversation (trace, required; limit).
expected<tracez_query> parse_tracez_query(const std::multimap<std::string, std::string>& params,
                                          bool conversation = false);

class recent_events {
public:
  /// Bounds: events held; audience definitions held, and the names in
  /// them all together (a fleet of 10,000 agents has audiences of 10,000
  /// names: they are kept once each, never copied into the events).
  struct limits {
    size_t capacity = 10000;
    size_t max_audiences = 4096;
    size_t max_audience_names = 256 * 1024;
    /// Recipients of one broadcast shown in an answer (the rest counted
    /// in `recipients_more`): one answer stays bounded.
    size_t max_recipients_shown = 64;
  };
  recent_events() : recent_events(limits{}) {}
  explicit recent_events(limits l);
  explicit recent_events(size_t capacity) : recent_events(limits{capacity}) {}

  /// Adds a batch (oldest first) and the number of events the tap could
  /// not deliver before it. `audience` events are kept aside, not in the
  /// ring: a broadcast that refers to one is answered with its recipients
  /// (while the definition is held; the most recent ones are).
  void add(std::vector<trace::event>&& batch, uint64_t missed);

  /// Forgets everything (when the subscription ends).
  void clear();

  struct answer {
    /// Broadcasts with their recipients (at most max_recipients_shown).
    std::vector<trace::event> events;
    /// Per event: recipients not shown.
    std::vector<size_t> recipients_more;
    /// Where to continue: the seq of the last event looked at.
    uint64_t next = 0;
    /// Events the tap could not deliver since the ring started.
    uint64_t missed = 0;
    /// The oldest seq still held (0: empty); with after + 1 < oldest,
    /// events the client asked for were already evicted.
    uint64_t oldest = 0;
    std::string boot;
    /// More matching events after `next` (ask again at once).
    bool more = false;
  };

  /// /tracez: matching events after q.after, oldest first, at most q.limit;
  /// without q.has_after the newest q.limit matching ones.
  answer query(const tracez_query& q) const;

  /// /tracez/conversation: every held event with q.trace_id, oldest first
  /// (at most q.limit, the newest ones).
  answer conversation(const tracez_query& q) const;

  size_t size() const;

  /// The answer's JSON text: {"boot", ["trace",] "next", "missed",
  /// "oldest", "more", "events": [JSON trace lines (trace::append_json)]}.
  static std::string to_json(const answer& a, std::string_view trace_hex = {});

private:
  /// Sorted names of `ev`'s audience, or null.
  const std::vector<std::string>* audience_of(const trace::event& ev) const;
  bool matches(const trace::event& ev, const tracez_query& q) const;
  void take(answer& a, const trace::event& ev) const;

  mutable std::mutex mutex_;
  limits limits_;
  std::deque<trace::event> ring_;
  std::map<uint64_t, std::vector<std::string>> audiences_;
  size_t audience_names_ = 0;
  uint64_t missed_ = 0;
  uint64_t last_seq_ = 0;
  std::string boot_;
};

/// The ring's subscription to the live tap: taken on the first /tracez
/// request, given up (and the ring cleared) after `idle` without one, so
/// a server nobody watches in a browser pays nothing for the web view.
/// Thread-safe; the clock is passed in (tests).
class recent_feed {
public:
  using clock = std::chrono::steady_clock;
  struct source {
    /// Starts delivering to the ring; returns a subscription id, or why
    /// not (the tap's limit of observers).
    std::function<expected<uint64_t>(std::shared_ptr<recent_events>)> subscribe;
    std::function<void(uint64_t)> unsubscribe;
  };

  explicit recent_feed(source src, clock::duration idle = std::chrono::seconds{60},
                       size_t capacity = 10000);
  /// Unsubscribes.
  ~recent_feed();
  recent_feed(const recent_feed&) = delete;
  recent_feed& operator=(const recent_feed&) = delete;

  /// A /tracez request at `now`: subscribes if needed; the ring to answer
  /// from, or the source's error.
  expected<std::shared_ptr<recent_events>> touch(clock::time_point now);

  /// Unsubscribes and clears the ring when the last request is `idle` ago.
  void expire(clock::time_point now);

  bool subscribed() const;

private:
  mutable std::mutex mutex_;
  source src_;
  clock::duration idle_;
  std::shared_ptr<recent_events> ring_;
  bool subscribed_ = false;
  uint64_t id_ = 0;
  clock::time_point last_{};
};

} // namespace convoke::server
