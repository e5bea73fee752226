#pragma once

/// @file
/// Errors are values: an `error` is a `std::error_code` (what went wrong, in
/// a category a program can test) plus a sentence for people (with the
/// details: which file, which address, which key). Functions that can fail
/// return `expected<T>` (tl::expected, Debian's libexpected-dev) instead of
/// a string that is empty on success.

#include <string>
#include <system_error>
#include <utility>

#include <tl/expected.hpp>

namespace convoke {

struct error {
  std::error_code code;
  /// For people: what failed and why; never empty for a real error.
  std::string text;

  /// The text, or the code's message if there is no text.
  std::string message() const {
    return text.empty() ? code.message() : text;
  }
};

/// A value or the error that prevented it; `expected<>` for "done or error".
template <class T = void>
using expected = tl::expected<T, error>;

/// Builds the error branch of an `expected`: `return fail(errc::x, "...")`.
template <class Code>
tl::unexpected<error> fail(Code code, std::string text) {
  using std::make_error_code;
  return tl::unexpected<error>{error{make_error_code(code), std::move(text)}};
}

inline tl::unexpected<error> fail(std::error_code code, std::string text) {
  return tl::unexpected<error>{error{code, std::move(text)}};
}

} // namespace convoke
