#include "convoke/proto/subject.hpp"

namespace convoke::proto {

namespace {

/// Splits off the next token of `s` (advancing it); `s` becomes empty
/// after the last token.
struct tokens {
  std::string_view rest;
  bool done = false;

  std::string_view next() noexcept {
    auto dot = rest.find('.');
    std::string_view tok;
    if (dot == std::string_view::npos) {
      tok = rest;
      rest = {};
      done = true;
    } else {
      tok = rest.substr(0, dot);
      rest.remove_prefix(dot + 1);
    }
    return tok;
  }
};

} // namespace

bool is_pattern(std::string_view s) noexcept {
  tokens ts{s};
  while (!ts.done) {
    auto t = ts.next();
    if (t == "*" || t == ">")
      return true;
  }
  return false;
}

bool pattern_matches(std::string_view pattern, std::string_view subject) noexcept {
  tokens p{pattern};
  tokens s{subject};
  while (!p.done) {
    auto pt = p.next();
    if (s.done)
      return false;
    auto st = s.next();
    if (pt == ">" && p.done)
      return true; // matched at least this one token
    if (pt != "*" && pt != st)
      return false;
  }
  return s.done;
}

bool pattern_covers(std::string_view outer, std::string_view inner) noexcept {
  tokens o{outer};
  tokens i{inner};
  while (!o.done) {
    auto ot = o.next();
    if (i.done)
      return false;
    auto it = i.next();
    if (ot == ">" && o.done)
      return true; // ">" covers whatever one or more tokens remain
    if (it == ">" && i.done)
      return false; // inner may match more tokens than outer allows
    if (ot == "*")
      continue; // "*" covers any single token, "*" included
    if (it != ot)
      return false; // a literal covers only itself (not "*")
  }
  return i.done;
}

} // namespace convoke::proto
