#pragma once

// The live trace tap: observers (agents that sent Observe, the admin web
// view) subscribe with a filter and receive the trace events the writer
// thread decodes, in batches. CAF-free; tests/unit/trace_tap_test.cpp drives
// it with publish()/end_pass() directly.
//
// Threads: subscribe() and unsubscribe() from any thread (a mutex, and a
// flag the writer checks once per call); publish() and end_pass() on the
// trace writer's thread only, which owns every subscriber's pending batch.
//
// An observer never slows relaying, and memory stays bounded: each
// subscriber has one pending batch, bounded in events and bytes. end_pass()
// hands it over (deliver) only when the subscriber is ready(); until then it
// keeps filling up to its bound, and events beyond it are dropped and
// counted. The next batch delivered carries that count (`missed`). The number
// of subscribers is capped (trace.max-observers).
//
// Audiences: a broadcast's event carries an audience number, defined by an
// earlier `audience` event (its recipients). The hub keeps the latest
// definitions (tap_limits::max_audiences, most recent) and, before a
// subscriber's first event that refers to audience N, queues N's definition
// for it; so every observer can resolve a broadcast's recipients itself. The
// hub does not fill `recipients` on relay events. Audience events are
// otherwise not delivered, unless a filter asks for the kind explicitly.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "convoke/common/error.hpp"
#include "convoke/common/trace_event.hpp"
#include "trace.hpp"

namespace convoke::server {

/// Receives batches of events (the writer thread calls both members).
class tap_subscriber {
public:
  virtual ~tap_subscriber() = default;
  /// False while the previous batch is not consumed yet (then the hub holds,
  /// up to its bound, and counts the rest as missed). Must be cheap.
  virtual bool ready() = 0;
  /// A batch of events (possibly empty when only `missed` is news), and how
  /// many matching events were dropped since the previous batch. Must not
  /// block: hand the batch over and return.
  virtual void deliver(std::vector<trace::event>&& batch, uint64_t missed) = 0;
};

/// Bounds of one filter, so that matching an event stays cheap.
inline constexpr size_t max_filter_agents = 64;
inline constexpr size_t max_filter_routes = 64;
/// W3C trace ids are 16 bytes.
inline constexpr size_t max_filter_trace_id = 16;
inline constexpr size_t max_filter_events = 32;

/// A filter as an observer sent it (unchecked): see parse_tap_filter.
struct tap_filter_spec {
  /// Exact agent names.
  std::vector<std::string> agents;
  /// Routes or patterns (proto/subject.hpp).
  std::vector<std::string> routes;
  /// Raw trace id bytes; empty: any.
  std::string trace_id;
  /// Kind names ("relay", ...); empty: every kind but "audience".
  std::vector<std::string> events;
  /// Payload bytes wanted per event; 0: none.
  uint32_t payload_bytes = 0;
};

/// A checked filter. Every non-empty field narrows; within a list any entry
/// matches.
struct tap_filter {
  /// Sorted, unique. An event matches if one of them is its sender, its
  /// recipient, one of its `recipients` or a member of its audience.
  std::vector<std::string> agents;
  /// An event matches if its route matches one of these patterns.
  std::vector<std::string> routes;
  std::string trace_id;
  /// Bit (1 << kind) per kind asked for; 0: every kind but audience.
  uint32_t kinds = 0;
  /// Payload bytes given per event (0: payloads cleared). The caller sets
  /// it to 0 when the observer may not see payloads.
  uint32_t payload_bytes = 0;

  bool wants(trace::kind k) const noexcept;
  /// True if `ev` passes; `members` are the recipients of its audience, when
  /// it has one the hub knows (else null).
  bool matches(const trace::event& ev, const std::vector<std::string>* members) const;
};

/// Checks a filter. The error (errc::invalid_value) says what is wrong:
/// "unknown event kind 'x' (known: relay, ...)", "invalid route pattern
/// 'a..b': ...", "invalid agent name '...': ...", "trace id is 20 bytes; at
/// most 16", "too many agents in the filter: 65; at most 64", ...
expected<tap_filter> parse_tap_filter(const tap_filter_spec& spec);

/// The hub's bounds.
struct tap_limits {
  /// Subscribers at once (trace.max-observers).
  uint32_t max_subscribers = 64;
  /// Events and bytes one subscriber's pending batch may hold.
  size_t max_pending_events = 4096;
  size_t max_pending_bytes = 4u << 20;
  /// Audience definitions kept (the most recent).
  size_t max_audiences = 4096;
};

/// The writer's consumer (trace_writer::set_consumer): it calls publish()
/// and end_pass() on its thread.
class trace_tap final : public trace_consumer {
public:
  /// `on_active(bool)` is called (under the tap's lock, so in order) when
  /// the first subscriber comes and when the last one goes: the server sets
  /// the writer's `observed` flag with it.
  explicit trace_tap(tap_limits limits = {}, std::function<void(bool)> on_active = {});
  ~trace_tap();
  trace_tap(const trace_tap&) = delete;
  trace_tap& operator=(const trace_tap&) = delete;

  /// Adds a subscriber (any thread); its events start with the writer's
  /// next call. The id is never 0. Fails (errc::invalid_config) when
  /// max_subscribers subscribe already: "too many observers (N;
  /// trace.max-observers)".
  expected<uint64_t> subscribe(tap_filter filter, std::shared_ptr<tap_subscriber> s);

  /// Removes a subscriber (any thread; unknown ids are ignored). A deliver()
  /// under way on the writer thread may still finish; none starts after the
  /// writer's next call. The hub lets go of the subscriber then.
  void unsubscribe(uint64_t id);

  /// Some subscriber exists (relaxed; the writer skips the tap otherwise).
  bool active() const noexcept {
    return active_.load(std::memory_order_relaxed);
  }

  /// The most payload bytes any subscriber wants (and may see): what the
  /// recorder should keep of each payload for the tap.
  uint32_t payload_bytes_wanted() const noexcept {
    return payload_wanted_.load(std::memory_order_relaxed);
  }

  /// Writer thread only: one decoded event (every kind, audience included).
  void publish(const trace::event& ev) override;

  /// Writer thread only: after each batch of records; hands pending
  /// batches to the subscribers that are ready.
  void end_pass() override;

  /// Events dropped for all subscribers so far.
  uint64_t missed_total() const noexcept {
    return missed_total_.load(std::memory_order_relaxed);
  }

  /// Adds events a subscriber dropped on its side (any thread), so that
  /// missed_total() tells all that observers lost.
  void count_missed(uint64_t n) noexcept {
    missed_total_.fetch_add(n, std::memory_order_relaxed);
  }

  /// Subscribers now (any thread).
  size_t subscribers() const;

  const tap_limits& limits() const noexcept {
    return limits_;
  }

private:
  struct sub {
    uint64_t id = 0;
    tap_filter filter;
    std::shared_ptr<tap_subscriber> target;
    std::vector<trace::event> pending;
    size_t pending_bytes = 0;
    uint64_t missed = 0;
    /// Audiences whose definition this subscriber was given.
    std::unordered_set<uint64_t> audiences_sent;
  };

  void apply_changes();
  bool enqueue(sub& s, const trace::event& ev);
  void remember_audience(const trace::event& ev);

  tap_limits limits_;
  std::function<void(bool)> on_active_;
  // -- any thread, under mtx_ --
  mutable std::mutex mtx_;
  uint64_t next_id_ = 1;
  /// Every subscriber (for the cap and payload_bytes_wanted).
  std::map<uint64_t, uint32_t> registered_;
  std::vector<std::unique_ptr<sub>> added_;
  std::vector<uint64_t> removed_;
  std::atomic<bool> changed_{false};
  std::atomic<bool> active_{false};
  std::atomic<uint32_t> payload_wanted_{0};
  std::atomic<uint64_t> missed_total_{0};
  // -- writer thread only --
  std::vector<std::unique_ptr<sub>> subs_;
  std::unordered_map<uint64_t, trace::event> audiences_;
  std::deque<uint64_t> audience_order_;
};

} // namespace convoke::server
