// fuzz_hello: the Hello checks (server::check_hello) and the name, route and
// addressing rules (proto::check_agent_name, check_route,
// check_route_pattern, server::check_addressing).
//
// The input is a frame body (a Hello, if decode_frame says so) or, failing
// that, a Hello body that conforms to the schema. check_hello runs with the
// default configuration and with a token and max_routes = 2. Checks: an
// accepted Hello has the current protocol version, a valid or empty name, a role of at
// most 64 bytes, valid routes within the limit; check_shared_token accepts
// exactly the configured token (or anything when none is set). Then slices
// of the raw input (cut at the position byte 0 gives) go through the rules,
// which are checked against their definition (1-64 bytes of
// [A-Za-z0-9._:@-]; 1-128 bytes of printable ASCII without spaces, in
// non-empty '.'-separated tokens, "*" and a last ">" only in subscription
// patterns; a refusal has a code of the proto category and a sentence) and
// against check_addressing.

#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "check.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/subject.hpp"
#include "convoke/proto/wire_check.hpp"
#include "session_rules.hpp"

namespace {

using namespace convoke;

bool name_ok(std::string_view s) {
  if (s.empty() || s.size() > 64)
    return false;
  for (char c : s)
    if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9')
        && std::string_view{"._:@-"}.find(c) == std::string_view::npos)
      return false;
  return true;
}

bool route_chars_ok(std::string_view s) {
  if (s.empty() || s.size() > 128)
    return false;
  for (char c : s)
    if (c <= ' ' || c > '~')
      return false;
  return true;
}

/// Tokens between single dots, none empty; "*" anywhere and ">" as the last
/// token only in a pattern.
bool tokens_ok(std::string_view s, bool pattern) {
  size_t start = 0;
  for (;;) {
    auto dot = s.find('.', start);
    bool last = dot == std::string_view::npos;
    auto tok = s.substr(start, last ? std::string_view::npos : dot - start);
    if (tok.empty() || (tok == "*" && !pattern) || (tok == ">" && (!pattern || !last)))
      return false;
    if (last)
      return true;
    start = dot + 1;
  }
}

bool route_ok(std::string_view s) {
  return route_chars_ok(s) && tokens_ok(s, false);
}

bool pattern_ok(std::string_view s) {
  return route_chars_ok(s) && tokens_ok(s, true);
}

void check(const v1::Hello& hello, const server::server_config& cfg) {
  // The shared token is checked apart (the session answers failures late).
  FUZZ_CHECK(!server::check_shared_token(hello, cfg).has_value()
             == (cfg.token.empty() || hello.token() == cfg.token));
  auto refused = server::check_hello(hello, cfg);
  if (refused) {
    FUZZ_CHECK(!refused->code.empty() && !refused->text.empty());
    return;
  }
  FUZZ_CHECK(hello.protocol_version() == proto::protocol_version);
  FUZZ_CHECK(hello.agent_name().empty() || proto::check_agent_name(hello.agent_name()).has_value());
  FUZZ_CHECK(hello.agent_name().empty() || name_ok(hello.agent_name()));
  FUZZ_CHECK(hello.role().size() <= proto::max_role_length);
  FUZZ_CHECK(static_cast<uint32_t>(hello.routes_size()) <= cfg.max_routes);
  for (auto& r : hello.routes()) // subscriptions: patterns allowed
    FUZZ_CHECK(proto::check_route_pattern(r).has_value() && pattern_ok(r));
}

void check_rules(std::string_view a, std::string_view b) {
  auto name = proto::check_agent_name(a);
  auto route = proto::check_route(b);
  auto pattern = proto::check_route_pattern(b);
  FUZZ_CHECK(name.has_value() == name_ok(a));
  FUZZ_CHECK(route.has_value() == route_ok(b));
  FUZZ_CHECK(pattern.has_value() == pattern_ok(b));
  // A concrete route matches itself, and no pattern is a concrete route.
  FUZZ_CHECK(!route.has_value() || (proto::pattern_matches(b, b) && !proto::is_pattern(b)));
  FUZZ_CHECK(!pattern.has_value() || route.has_value() == !proto::is_pattern(b));
  for (auto* r : {&name, &route, &pattern}) // a refusal has a rules code and a sentence
    FUZZ_CHECK(
      r->has_value()
      || (r->error().code.category() == proto::error_category() && !r->error().text.empty()));
  bool expected = (a.empty() || name_ok(a)) && (b.empty() || route_ok(b));
  FUZZ_CHECK(!server::check_addressing(a, b).has_value() == expected);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr); // no "invalid UTF-8" lines per input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body{reinterpret_cast<const char*>(data), size};
  static const server::server_config defaults;
  static const server::server_config strict = [] {
    server::server_config c;
    c.token = "s3cret-token";
    c.max_routes = 2;
    return c;
  }();

  v1::Frame frame;
  const v1::Hello* hello = nullptr;
  if (proto::decode_frame(body, frame) == proto::frame_error::none && frame.has_hello())
    hello = &frame.hello();
  else if (proto::conforms(body, *v1::Hello::descriptor())
           && frame.mutable_hello()->ParseFromArray(data, static_cast<int>(size)))
    hello = &frame.hello();
  if (hello) {
    check(*hello, defaults);
    check(*hello, strict);
  }

  if (size > 0) {
    auto cut = data[0] % size;
    check_rules(body.substr(1, cut), body.substr(cut));
    check_rules(body.substr(cut), body.substr(1, cut));
  }
  return 0;
}
