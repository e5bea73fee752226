#include "convoke/proto/rules.hpp"

#include <fmt/format.h>

namespace convoke::proto {

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
         || c == '_' || c == '-' || c == ':' || c == '@';
}

} // namespace

std::string check_agent_name(std::string_view name) {
  if (name.empty())
    return "agent name is empty";
  if (name.size() > max_name_length)
    return fmt::format("agent name is {} bytes long; the limit is {}", name.size(),
                       max_name_length);
  for (auto c : name)
    if (!name_char(c))
      return fmt::format("agent name '{}' contains '{}'; allowed are "
                         "A-Z a-z 0-9 . _ - : @",
                         printable(name), printable(std::string_view{&c, 1}));
  return {};
}

std::string check_route(std::string_view route) {
  if (route.empty())
    return "route is empty";
  if (route.size() > max_route_length)
    return fmt::format("route is {} bytes long; the limit is {}", route.size(), max_route_length);
  for (auto c : route)
    if (c <= ' ' || c > '~')
      return fmt::format("route '{}' contains a space, control or non-ASCII "
                         "character",
                         printable(route));
  return {};
}

std::string printable(std::string_view bytes, size_t max) {
  std::string out;
  auto n = std::min(bytes.size(), max);
  out.reserve(n + 8);
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (bytes.size() > max)
    out += "...";
  return out;
}

} // namespace convoke::proto
