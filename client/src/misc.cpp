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

bool set_server_address(client_options& opts, const std::string& address) {
  std::string_view rest = address;
  bool tls = false;
  if (auto scheme = rest.find("://"); scheme != std::string_view::npos) {
    auto name = rest.substr(0, scheme);
    if (name == "tls")
      tls = true;
    else if (name != "tcp")
      return false;
    rest.remove_prefix(scheme + 3);
    if (rest.empty())
      return false;
  }
  auto hp = parse_host_port(std::string{rest}, opts.host, opts.port);
  if (!hp || hp->host.empty())
    return false;
  opts.host = hp->host;
  opts.port = hp->port;
  opts.tls = tls;
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
