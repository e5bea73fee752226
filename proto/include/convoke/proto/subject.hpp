#pragma once

/// @file
/// Hierarchical subjects and NATS-style patterns, shared by route
/// subscriptions and access rights (routes and agent names).
///
/// A subject is a string of tokens separated by '.' ("weather.eu.paris").
/// In a pattern, the token "*" matches exactly one token and the token ">",
/// only as the last token, matches one or more tokens. '*' or '>' inside a
/// longer token ("a*b") is an ordinary character. A subject without '.' is
/// one token, so flat routes ("weather/report") keep working unchanged.

#include <string_view>

namespace convoke::proto {

/// True if `s` has a "*" or ">" token, i.e. is a pattern rather than a
/// concrete subject.
bool is_pattern(std::string_view s) noexcept;

/// True if the concrete subject `subject` matches `pattern` (which may be a
/// concrete subject: then the match is exact).
bool pattern_matches(std::string_view pattern, std::string_view subject) noexcept;

/// True if every subject matched by `inner` is also matched by `outer`
/// ("weather.>" covers "weather.eu.*"; "weather.*" does not cover
/// "weather.>"). Used to check a requested subscription against a right.
bool pattern_covers(std::string_view outer, std::string_view inner) noexcept;

} // namespace convoke::proto
