#include "convoke/server/error.hpp"

#include <string>

namespace convoke::server {

namespace {

class category final : public std::error_category {
public:
  const char* name() const noexcept override {
    return "convoke.server";
  }
  std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
    case errc::unknown_key:
      return "unknown configuration key";
    case errc::invalid_value:
      return "invalid configuration value";
    case errc::invalid_config:
      return "inconsistent configuration";
    case errc::bad_config_file:
      return "unreadable or malformed configuration file";
    case errc::unwritable_file:
      return "output file cannot be written";
    case errc::resolve_failed:
      return "listen address does not resolve";
    case errc::bind_failed:
      return "cannot listen on the address";
    case errc::already_started:
      return "server already started";
    }
    return "unknown error";
  }
};

} // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

std::string_view to_string(errc e) noexcept {
  switch (e) {
  case errc::unknown_key:
    return "unknown_key";
  case errc::invalid_value:
    return "invalid_value";
  case errc::invalid_config:
    return "invalid_config";
  case errc::bad_config_file:
    return "bad_config_file";
  case errc::unwritable_file:
    return "unwritable_file";
  case errc::resolve_failed:
    return "resolve_failed";
  case errc::bind_failed:
    return "bind_failed";
  case errc::already_started:
    return "already_started";
  }
  return "unknown";
}

} // namespace convoke::server
