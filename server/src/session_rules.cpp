#include "session_rules.hpp"

#include <fmt/format.h>

#include "convoke/common/secure_random.hpp"
#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"

namespace convoke::server {

namespace codes = proto::codes;

std::optional<refusal> check_hello(const v1::Hello& hello, const server_config& cfg) {
  if (hello.protocol_version() != proto::protocol_version)
    return refusal{codes::unsupported_version,
                   fmt::format("protocol version {} is not supported; this server speaks "
                               "version {} (relayed messages arrive as Delivery frames): "
                               "upgrade the client",
                               hello.protocol_version(), proto::protocol_version)};
  if (!hello.agent_name().empty())
    if (auto ok = proto::check_agent_name(hello.agent_name()); !ok)
      return refusal{codes::invalid_name, std::move(ok.error().text)};
  if (reserved_for_summoner(cfg, hello.agent_name()))
    return refusal{codes::invalid_name,
                   fmt::format("the name '{}' is reserved for Summoner connections "
                               "(summoner@..., summoner.names)",
                               hello.agent_name())};
  if (hello.role().size() > proto::max_role_length)
    return refusal{codes::invalid_name, fmt::format("role is {} bytes long; the limit is {}",
                                                    hello.role().size(), proto::max_role_length)};
  if (static_cast<uint32_t>(hello.routes_size()) > cfg.max_routes)
    return refusal{codes::too_many_routes,
                   fmt::format("Hello lists {} routes; the limit is {} (limits.max-routes)",
                               hello.routes_size(), cfg.max_routes)};
  if (auto r = check_routes(hello.routes()))
    return r;
  return std::nullopt;
}

bool reserved_for_summoner(const server_config& cfg, std::string_view name) {
  if (cfg.summoner_listen.empty())
    return false;
  if (name.rfind("summoner@", 0) == 0)
    return true;
  for (auto& [addr, given] : cfg.summoner_names) {
    if (name.rfind(given, 0) != 0)
      continue;
    auto rest = name.substr(given.size());
    if (rest.empty())
      return true;
    if (rest.size() >= 2 && rest[0] == '-'
        && rest.find_first_not_of("0123456789", 1) == std::string_view::npos)
      return true;
  }
  return false;
}

std::optional<refusal> check_shared_token(const v1::Hello& hello, const server_config& cfg) {
  if (!cfg.token.empty() && !crypto::equal_constant_time(cfg.token, hello.token()))
    return refusal{codes::auth_failed, hello.token().empty()
                                         ? "this server requires a token in Hello"
                                         : "the token in Hello is not valid"};
  return std::nullopt;
}

std::optional<refusal> check_addressing(std::string_view recipient, std::string_view route) {
  if (!recipient.empty())
    if (auto ok = proto::check_agent_name(recipient); !ok)
      return refusal{codes::invalid_recipient, "recipient: " + ok.error().text};
  if (!route.empty())
    if (auto ok = proto::check_route(route); !ok)
      return refusal{codes::invalid_route, std::move(ok.error().text)};
  return std::nullopt;
}

std::optional<refusal> check_routes(const google::protobuf::RepeatedPtrField<std::string>& routes) {
  for (auto& r : routes)
    if (auto ok = proto::check_route_pattern(r); !ok)
      return refusal{codes::invalid_route, std::move(ok.error().text)};
  return std::nullopt;
}

v1::Frame make_notice(v1::Notice::Severity severity, std::string_view code, std::string text,
                      uint64_t client_seq, uint64_t message_id, uint64_t request_id) {
  v1::Frame f;
  auto n = f.mutable_notice();
  n->set_severity(severity);
  n->set_code(std::string{code});
  n->set_text(std::move(text));
  n->set_client_seq(client_seq);
  n->set_message_id(message_id);
  n->set_request_id(request_id);
  return f;
}

v1::Frame make_goodbye(std::string_view code, std::string reason) {
  v1::Frame f;
  auto g = f.mutable_goodbye();
  g->set_code(std::string{code});
  g->set_reason(std::move(reason));
  return f;
}

} // namespace convoke::server
