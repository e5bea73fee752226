#include "convoke/server/error.hpp"

#include "convoke/common/error_table.hpp"

#include <string>

namespace convoke::server {

namespace {

const error_row rows[] = {
  {static_cast<int>(errc::unknown_key), "unknown_key", "unknown configuration key"},
  {static_cast<int>(errc::invalid_value), "invalid_value", "invalid configuration value"},
  {static_cast<int>(errc::invalid_config), "invalid_config", "inconsistent configuration"},
  {static_cast<int>(errc::bad_config_file), "bad_config_file",
   "unreadable or malformed configuration file"},
  {static_cast<int>(errc::unwritable_file), "unwritable_file", "output file cannot be written"},
  {static_cast<int>(errc::resolve_failed), "resolve_failed", "listen address does not resolve"},
  {static_cast<int>(errc::bind_failed), "bind_failed", "cannot listen on the address"},
  {static_cast<int>(errc::already_started), "already_started", "server already started"},
};

const table_category& category() noexcept {
  static const table_category instance{"convoke.server", rows};
  return instance;
}

} // namespace

const std::error_category& error_category() noexcept {
  return category();
}

std::string_view to_string(errc e) noexcept {
  return category().code_name(static_cast<int>(e));
}

} // namespace convoke::server
