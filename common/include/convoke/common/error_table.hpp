#pragma once

/// @file
/// A `std::error_category` made from one table: each code of an error enum
/// is written once, with its stable name (for logs and `to_string`) and its
/// message (for people). The SDK, server and proto categories use it.

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

namespace convoke {

/// One code of an error enum.
struct error_row {
  int code;
  std::string_view name;    // "bind_failed"
  std::string_view message; // "cannot listen on the address"
};

class table_category final : public std::error_category {
public:
  template <std::size_t N>
  table_category(const char* name, const error_row (&rows)[N]) noexcept
    : name_(name), rows_(rows, N) {}

  const char* name() const noexcept override {
    return name_;
  }

  std::string message(int code) const override {
    auto* row = find(code);
    return row != nullptr ? std::string{row->message} : std::string{"unknown error"};
  }

  /// The stable name of `code`, or "unknown".
  std::string_view code_name(int code) const noexcept {
    auto* row = find(code);
    return row != nullptr ? row->name : std::string_view{"unknown"};
  }

private:
  const error_row* find(int code) const noexcept {
    for (auto& row : rows_)
      if (row.code == code)
        return &row;
    return nullptr;
  }

  const char* name_;
  std::span<const error_row> rows_;
};

} // namespace convoke
