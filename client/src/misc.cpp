// CAF-free parts of the SDK: error category, option helpers.
#include "convoke/client/error.hpp"
#include "convoke/client/options.hpp"
#include "convoke/common/units.hpp"

namespace convoke {

namespace {

class category final : public std::error_category {
public:
  const char* name() const noexcept override {
    return "convoke";
  }
  std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
    case errc::not_connected:
      return "not connected to a server";
    case errc::send_buffer_full:
      return "too much data is waiting to be sent";
    case errc::invalid_argument:
      return "invalid argument";
    case errc::timeout:
      return "timed out";
    case errc::connection_lost:
      return "connection lost";
    case errc::refused:
      return "refused by the server";
    case errc::stopped:
      return "the agent is stopping";
    case errc::message_too_large:
      return "the message is larger than the server accepts";
    case errc::cancelled:
      return "cancelled";
    case errc::failed:
      return "the task failed";
    }
    return "unknown error";
  }
};

} // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

std::string to_string(errc e) {
  switch (e) {
  case errc::not_connected:
    return "not_connected";
  case errc::send_buffer_full:
    return "send_buffer_full";
  case errc::invalid_argument:
    return "invalid_argument";
  case errc::timeout:
    return "timeout";
  case errc::connection_lost:
    return "connection_lost";
  case errc::refused:
    return "refused";
  case errc::stopped:
    return "stopped";
  case errc::cancelled:
    return "cancelled";
  case errc::failed:
    return "failed";
  case errc::message_too_large:
    return "message_too_large";
  }
  return "unknown";
}

bool set_server_address(client_options& opts, const std::string& address) {
  auto hp = parse_host_port(address, opts.host, opts.port);
  if (!hp || hp->host.empty())
    return false;
  opts.host = hp->host;
  opts.port = hp->port;
  return true;
}

} // namespace convoke
