#include "convoke/proto/rules.hpp"

#include "convoke/common/error_table.hpp"

#include <fmt/format.h>

namespace convoke::proto {

namespace {

const error_row rows[] = {
  {static_cast<int>(errc::name_empty), "name_empty", "agent name is empty"},
  {static_cast<int>(errc::name_too_long), "name_too_long", "agent name is too long"},
  {static_cast<int>(errc::name_invalid_character), "name_invalid_character",
   "agent name contains a character that is not allowed"},
  {static_cast<int>(errc::route_empty), "route_empty", "route is empty"},
  {static_cast<int>(errc::route_too_long), "route_too_long", "route is too long"},
  {static_cast<int>(errc::route_invalid_character), "route_invalid_character",
   "route contains a space, control or non-ASCII character"},
  {static_cast<int>(errc::route_empty_token), "route_empty_token",
   "route has an empty token (leading, trailing or double '.')"},
  {static_cast<int>(errc::route_is_pattern), "route_is_pattern",
   "route is a pattern; patterns are only for subscriptions"},
  {static_cast<int>(errc::route_tail_not_last), "route_tail_not_last",
   "route pattern has '>' before its last token"},
};

const table_category& category() noexcept {
  static const table_category instance{"convoke.proto", rows};
  return instance;
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
         || c == '_' || c == '-' || c == ':' || c == '@';
}

} // namespace

const std::error_category& error_category() noexcept {
  return category();
}

std::string_view to_string(errc e) noexcept {
  return category().code_name(static_cast<int>(e));
}

expected<> check_agent_name(std::string_view name) {
  if (name.empty())
    return fail(errc::name_empty, "agent name is empty");
  if (name.size() > max_name_length)
    return fail(errc::name_too_long, fmt::format("agent name is {} bytes long; the limit is {}",
                                                 name.size(), max_name_length));
  for (auto c : name)
    if (!name_char(c))
      return fail(errc::name_invalid_character,
                  fmt::format("agent name '{}' contains '{}'; allowed are "
                              "A-Z a-z 0-9 . _ - : @",
                              printable(name), printable(std::string_view{&c, 1})));
  return {};
}

namespace {

expected<> check_route_impl(std::string_view route, bool pattern) {
  if (route.empty())
    return fail(errc::route_empty, "route is empty");
  if (route.size() > max_route_length)
    return fail(errc::route_too_long, fmt::format("route is {} bytes long; the limit is {}",
                                                  route.size(), max_route_length));
  size_t start = 0; // of the current token
  for (size_t i = 0; i <= route.size(); ++i) {
    if (i < route.size()) {
      auto c = route[i];
      if (c <= ' ' || c > '~')
        return fail(errc::route_invalid_character,
                    fmt::format("route '{}' contains a space, control or non-ASCII "
                                "character",
                                printable(route)));
      if (c != '.')
        continue;
    }
    auto token = route.substr(start, i - start);
    start = i + 1;
    if (token.empty())
      return fail(errc::route_empty_token,
                  fmt::format("route '{}' has an empty token (a leading, trailing or double "
                              "'.'); tokens are separated by single dots",
                              printable(route)));
    if (token.size() != 1 || (token[0] != '*' && token[0] != '>'))
      continue;
    if (!pattern)
      return fail(errc::route_is_pattern,
                  fmt::format("route '{}' is a pattern; patterns are only for subscriptions",
                              printable(route)));
    if (token[0] == '>' && i != route.size())
      return fail(errc::route_tail_not_last,
                  fmt::format("route pattern '{}' has '>' before its last token; '>' matches "
                              "the rest of a route and may only come last",
                              printable(route)));
  }
  return {};
}

} // namespace

expected<> check_route(std::string_view route) {
  return check_route_impl(route, false);
}

expected<> check_route_pattern(std::string_view route) {
  return check_route_impl(route, true);
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
