#pragma once

// Protocol decisions of a session, free of CAF: what makes a Hello, an
// Envelope or a subscription acceptable, and the Notice to send otherwise.

#include <optional>
#include <string>
#include <string_view>

#include "convoke/server/config.hpp"
#include "convoke/v1/wire.pb.h"

namespace convoke::server {

/// Why something was refused: a stable Notice code and a sentence.
struct refusal {
  std::string_view code;
  std::string text;
};

/// Checks a Hello (version, name, role, routes). Not the token: the
/// session answers failed logins late (auth.failed-login-delay).
std::optional<refusal> check_hello(const v1::Hello& hello, const server_config& cfg);

/// Checks the shared secret (auth.token), in constant time.
std::optional<refusal> check_shared_token(const v1::Hello& hello, const server_config& cfg);

/// Checks the addressing of an envelope sent by an agent (recipient and
/// route syntax; empty means none). The route must be concrete: a pattern
/// is refused with `invalid_route`.
/// True if Convoke agents may not take `name` because Summoner connections
/// are named so (with summoner.listen set): summoner@..., and the names of
/// summoner.names with their -N suffixes.
bool reserved_for_summoner(const server_config& cfg, std::string_view name);

std::optional<refusal> check_addressing(std::string_view recipient, std::string_view route);

/// Checks the routes of a Hello, Subscribe or Unsubscribe: concrete routes
/// or patterns ("weather.*.paris", "weather.>").
std::optional<refusal> check_routes(const google::protobuf::RepeatedPtrField<std::string>& routes);

/// Builds a Notice frame.
v1::Frame make_notice(v1::Notice::Severity severity, std::string_view code, std::string text,
                      uint64_t client_seq = 0, uint64_t message_id = 0, uint64_t request_id = 0);

/// Builds a Goodbye frame.
v1::Frame make_goodbye(std::string_view code, std::string reason);

} // namespace convoke::server
