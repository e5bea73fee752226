#include "cluster_rules.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "convoke/proto/rules.hpp"

namespace convoke::server {

bool claim_beats(const claim_key& a, const claim_key& b) noexcept {
  if (a.generation != b.generation)
    return a.generation > b.generation;
  if (a.since_ns != b.since_ns)
    return a.since_ns < b.since_ns;
  return a.node < b.node;
}

std::string default_node_name(std::string_view hostname, uint64_t random) {
  std::string base;
  for (char c : hostname) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
              || c == '_';
    if (c == '.')
      break; // the short host name
    base.push_back(ok ? c : '-');
  }
  if (base.empty()
      || !((base[0] >= 'a' && base[0] <= 'z') || (base[0] >= 'A' && base[0] <= 'Z')
           || (base[0] >= '0' && base[0] <= '9')))
    base.insert(0, "node");
  if (base.size() > 40)
    base.resize(40);
  auto name = fmt::format("{}-{:04x}", base, random & 0xffff);
  if (!proto::check_agent_name(name))
    return fmt::format("node-{:04x}", random & 0xffff);
  return name;
}

uint64_t first_message_id(uint64_t prefix) noexcept {
  return ((prefix & 0xff) << id_prefix_shift) | 1;
}

uint64_t id_prefix_of(uint64_t message_id) noexcept {
  return (message_id >> id_prefix_shift) & 0xff;
}

uint64_t pick_id_prefix(uint64_t random, const std::vector<uint64_t>& taken) noexcept {
  auto start = random % 255;
  for (uint64_t i = 0; i < 255; ++i) {
    auto p = (start + i) % 255 + 1;
    if (std::find(taken.begin(), taken.end(), p) == taken.end())
      return p;
  }
  return start + 1; // more than 255 nodes: ids may repeat across nodes
}

std::vector<std::string> merge_names(std::vector<std::vector<std::string>> lists, size_t limit,
                                     bool& truncated) {
  std::vector<std::string> all;
  for (auto& l : lists)
    for (auto& n : l)
      all.push_back(std::move(n));
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  if (all.size() > limit) {
    all.resize(limit);
    truncated = true;
  }
  return all;
}

} // namespace convoke::server
