#pragma once

// `convoke trace` output: one human line per event, a conversation (the
// events of one trace id) as a terminal sequence diagram, Mermaid text or a
// self-contained HTML page with an SVG timeline, and per agent / per route
// statistics. Free of CAF and I/O (strings in, strings out): unit-tested.

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "convoke/common/trace_event.hpp"

namespace convoke::cli {

/// One human-readable line for an event (no newline): time, kind, ids,
/// sender -> recipient(s), route, sizes, latencies, trace id, reason.
std::string render_line(const trace::event& ev);

// -- conversations (trace show) -----------------------------------------------------

/// One arrow of a sequence diagram: a message from one agent to another
/// (a broadcast is one arrow per recipient), or its failure.
struct conversation_arrow {
  int64_t ts_ns = 0;
  std::string from;
  std::string to;
  uint64_t message_id = 0;
  trace::kind what = trace::kind::relay;
  std::string route;
  uint32_t bytes = 0;
  /// sender clock -> server accepted (0: unknown).
  int64_t ingress_ns = 0;
  /// server accepted -> written to this recipient (0: not traced).
  int64_t delivery_ns = 0;
  /// A reply: time since its request was accepted (0: not a reply or unknown).
  int64_t reply_after_ns = 0;
  uint64_t request_id = 0;
  uint64_t in_reply_to = 0;
  /// Part of a broadcast to `fanout` agents.
  uint32_t fanout = 0;
  /// dropped / undeliverable / rejected: why.
  std::string reason;
  bool failed() const noexcept {
    return what != trace::kind::relay && what != trace::kind::written;
  }
};

struct conversation {
  std::string trace_id; // raw bytes
  /// Columns in order of first appearance.
  std::vector<std::string> agents;
  std::vector<conversation_arrow> arrows;
  /// Events that are no arrow (gaps, joins) or were cut (limits).
  std::vector<std::string> notes;
};

/// Collects one conversation from events fed in file order: the events of
/// a trace id, replies to its requests (in_reply_to, also without the
/// trace id), and what happened to its messages (written, dropped,
/// undeliverable). Two passes over the files: `first_pass` then `add`.
class conversation_builder {
public:
  static constexpr size_t max_messages = 10000;
  static constexpr size_t max_arrows = 20000;

  explicit conversation_builder(std::string trace_id);
  /// Pass 1: learns the conversation's message and request ids.
  void first_pass(const trace::event& ev);
  /// Pass 2: builds arrows.
  void add(const trace::event& ev);
  /// True when pass 1 saw at least one event of the trace id.
  bool found() const noexcept {
    return found_;
  }
  conversation finish();

private:
  bool mine(const trace::event& ev) const;
  void arrow(conversation_arrow a);

  conversation conv_;
  bool found_ = false;
  /// (boot, message id) of the conversation's messages.
  std::set<std::pair<std::string, uint64_t>> messages_;
  /// (boot, requester, request id) -> accepted time.
  std::map<std::tuple<std::string, std::string, uint64_t>, int64_t> requests_;
  /// (boot, message id) -> accepted time and sender, for delivery latencies.
  std::map<std::pair<std::string, uint64_t>, std::pair<int64_t, std::string>> accepted_;
  bool cut_ = false;
};

/// Agents as columns, one line per arrow, with times and latencies.
std::string render_sequence_text(const conversation& c);
/// Mermaid `sequenceDiagram` text.
std::string render_mermaid(const conversation& c);
/// One self-contained HTML page (inline CSS and SVG, no script, no URL).
std::string render_html(const conversation& c);

// -- stats --------------------------------------------------------------------------

struct agent_stats {
  uint64_t sent = 0;
  uint64_t received = 0;
  uint64_t bytes_sent = 0;
  uint64_t dropped = 0;
  uint64_t undeliverable = 0;
  uint64_t rejected = 0;
};

struct route_stats {
  uint64_t messages = 0;
  uint64_t deliveries = 0;
  uint64_t bytes = 0;
  uint64_t dropped = 0;
};

/// Counts over a window of time (events in [from_ns, to_ns]).
class trace_stats {
public:
  static constexpr size_t max_keys = 10000;
  void add(const trace::event& ev);
  /// Events before this time are not counted (0: all).
  int64_t from_ns = 0;
  /// Human table; rates per second over `seconds`.
  std::string render(double seconds) const;
  /// One JSON object.
  std::string render_json(double seconds) const;
  uint64_t events = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  uint64_t gaps = 0;
  std::map<std::string, agent_stats> agents;
  std::map<std::string, route_stats> routes;
};

} // namespace convoke::cli
