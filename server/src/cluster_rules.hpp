#pragma once

// The cluster's decisions that need no actor (docs/cluster.md), so unit
// tests reach them without sockets: which of two claims on one agent name
// wins, node names, message id prefixes, merging agent lists, and the
// status the admin listener shows.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace convoke::server {

/// A node's claim on an agent name, as far as deciding between two claims
/// goes.
struct claim_key {
  /// Take-overs by resume token the name went through (a take-over of a
  /// claim has that claim's generation + 1).
  uint64_t generation = 0;
  /// When the node accepted it (unix ns).
  int64_t since_ns = 0;
  /// The node holding it.
  std::string_view node;
};

/// True if claim `a` wins over claim `b` on the same name: the later
/// take-over, else the older claim, else the node whose name sorts first.
/// Every node decides the same way without talking to the others.
bool claim_beats(const claim_key& a, const claim_key& b) noexcept;

/// The default cluster.node: the host name, cut to what an agent name
/// allows, and 4 hex digits from `random`.
std::string default_node_name(std::string_view hostname, uint64_t random);

/// Message ids of a cluster node carry its prefix (1-255) in bits 44-51, so
/// that ids stay unique across nodes and below 2^53 (exact in JavaScript).
inline constexpr int id_prefix_shift = 44;
uint64_t first_message_id(uint64_t prefix) noexcept;
/// The prefix of an id (0 for ids of a server without a cluster).
uint64_t id_prefix_of(uint64_t message_id) noexcept;
/// A prefix (1-255) from `random` that is not in `taken`.
uint64_t pick_id_prefix(uint64_t random, const std::vector<uint64_t>& taken) noexcept;

/// Merges sorted name lists (one per node) into the first `limit` names in
/// byte order, without duplicates; `truncated` tells whether names beyond
/// them were left out (or one of the lists was itself truncated).
std::vector<std::string> merge_names(std::vector<std::vector<std::string>> lists, size_t limit,
                                     bool& truncated);

/// What the admin listener shows of the cluster (/varz).
struct cluster_status {
  struct peer {
    std::string node;
    std::string client_addr;
    std::string cluster_addr;
    uint64_t boot = 0;
    uint64_t agents = 0;
    /// It drains or is in lame duck: not a place to send agents to.
    bool leaving = false;
  };
  std::string name;
  std::string node;
  std::vector<peer> peers;
};

} // namespace convoke::server
