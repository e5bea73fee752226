// TEMPORARY (branch i10-cli only): the kind names of the contract, so that
// parse_json links before the lead's common/src/trace_event.cpp is on main.
// Deleted when main is merged.

#include <array>

#include "convoke/common/trace_event.hpp"

namespace convoke::trace {

namespace {
constexpr std::array<std::string_view, 9> names{
  "relay", "undeliverable", "dropped", "rejected", "written", "gap", "joined", "left", "audience"};
} // namespace

std::string_view to_string(kind k) noexcept {
  auto i = static_cast<size_t>(k);
  return i < names.size() ? names[i] : std::string_view{"event"};
}

std::optional<kind> kind_from_string(std::string_view name) noexcept {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name)
      return static_cast<kind>(i);
  return std::nullopt;
}

} // namespace convoke::trace
