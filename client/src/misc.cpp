// CAF-free parts of the SDK: error category, option helpers.
#include "convoke/client/error.hpp"
#include "convoke/client/options.hpp"
#include "convoke/common/error_table.hpp"
#include "convoke/common/units.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>

namespace convoke {

namespace {

const error_row rows[] = {
  {static_cast<int>(errc::not_connected), "not_connected", "not connected to a server"},
  {static_cast<int>(errc::send_buffer_full), "send_buffer_full",
   "too much data is waiting to be sent"},
  {static_cast<int>(errc::invalid_argument), "invalid_argument", "invalid argument"},
  {static_cast<int>(errc::timeout), "timeout", "timed out"},
  {static_cast<int>(errc::connection_lost), "connection_lost", "connection lost"},
  {static_cast<int>(errc::refused), "refused", "refused by the server"},
  {static_cast<int>(errc::stopped), "stopped", "the agent is stopping"},
  {static_cast<int>(errc::message_too_large), "message_too_large",
   "the message is larger than the server accepts"},
  {static_cast<int>(errc::cancelled), "cancelled", "cancelled"},
  {static_cast<int>(errc::failed), "failed", "the task failed"},
  {static_cast<int>(errc::unsupported), "unsupported", "the server does not offer this"},
};

const table_category& category() noexcept {
  static const table_category instance{"convoke", rows};
  return instance;
}

} // namespace

const std::error_category& error_category() noexcept {
  return category();
}

std::string to_string(errc e) {
  return std::string{category().code_name(static_cast<int>(e))};
}

std::string to_string(const server_address& a) {
  std::string out = a.tls ? "tls://" : "";
  if (a.host.find(':') != std::string::npos)
    out += "[" + a.host + "]"; // IPv6
  else
    out += a.host;
  return out + ":" + std::to_string(a.port);
}

std::optional<server_address> parse_server_address(std::string_view text,
                                                   const server_address& defaults) {
  if (text.size() > max_server_address_length)
    return std::nullopt;
  std::string_view rest = text;
  bool tls = false;
  if (auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    auto name = rest.substr(0, scheme);
    if (name == "tls")
      tls = true;
    else if (name != "tcp")
      return std::nullopt;
    rest.remove_prefix(scheme + 3);
    if (rest.empty())
      return std::nullopt;
  }
  auto hp = parse_host_port(rest, defaults.host, defaults.port);
  if (!hp || hp->host.empty() || hp->port == 0)
    return std::nullopt;
  // Control characters, spaces or a comma in a host name are a mistake (or
  // an attack on a log line), never a server.
  for (unsigned char c : hp->host)
    if (c <= ' ' || c == ',' || c == 0x7f)
      return std::nullopt;
  return server_address{std::move(hp->host), hp->port, tls};
}

std::vector<server_address> server_list(const client_options& opts) {
  if (!opts.servers.empty())
    return opts.servers;
  return {server_address{opts.host, opts.port, opts.tls}};
}

bool set_server_address(client_options& opts, const std::string& address, std::string* why) {
  auto fail = [&](std::string text) {
    if (why != nullptr)
      *why = std::move(text);
    return false;
  };
  server_address defaults{opts.host, opts.port, false};
  std::vector<server_address> list;
  std::string_view rest = address;
  for (;;) {
    auto comma = rest.find(',');
    auto entry = rest.substr(0, comma);
    while (!entry.empty() && entry.front() == ' ')
      entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ')
      entry.remove_suffix(1);
    if (entry.empty())
      return fail("an empty address in the list '" + address + "'");
    auto a = parse_server_address(entry, defaults);
    if (!a)
      return fail("'" + std::string{entry}
                  + "' is not an address like host:port or tls://host:port");
    if (!list.empty() && a->tls != list.front().tls)
      return fail("the list '" + address
                  + "' mixes tls:// and plaintext addresses; use one kind for all");
    list.push_back(std::move(*a));
    if (comma == std::string_view::npos)
      break;
    rest.remove_prefix(comma + 1);
  }
  opts.host = list.front().host;
  opts.port = list.front().port;
  opts.tls = list.front().tls;
  if (list.size() > 1)
    opts.servers = std::move(list);
  else
    opts.servers.clear();
  return true;
}

} // namespace convoke

namespace convoke {

std::string read_token(const std::string& file, const char* env_var) {
  if (file.empty()) {
    auto v = env_var != nullptr ? std::getenv(env_var) : nullptr;
    return v != nullptr ? std::string{v} : std::string{};
  }
  std::ifstream in{file, std::ios::binary};
  if (!in)
    throw std::runtime_error("cannot read the token file '" + file + "': " + std::strerror(errno));
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' '))
    token.pop_back();
  if (token.empty())
    throw std::runtime_error("the token file '" + file + "' is empty");
  return token;
}

} // namespace convoke
