#include "convoke/common/text.hpp"

#include <ctime>

#include <fmt/format.h>

namespace convoke {

namespace {

// Length of the valid UTF-8 sequence at `s[i]`, or 0 if it is invalid.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4;
  else
    return 0;
  if (i + len > s.size())
    return 0;
  for (size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
      return 0;
  return len;
}

} // namespace

void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    default:
      if (c < 0x20 || c == 0x7F) {
        out += fmt::format("\\u{:04x}", c);
      } else if (c < 0x80) {
        out.push_back(static_cast<char>(c));
      } else if (auto n = utf8_sequence_length(text, i); n > 0) {
        out.append(text.substr(i, n));
        i += n - 1;
      } else {
        // Invalid UTF-8: keep the byte visible without breaking the JSON.
        out += fmt::format("\\u00{:02x}", c);
      }
    }
  }
  out.push_back('"');
}

std::string json_string(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_json_string(out, text);
  return out;
}

std::string logfmt_value(std::string_view value) {
  bool plain = !value.empty();
  for (auto ch : value) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7F) {
      plain = false;
      break;
    }
  }
  if (plain)
    return std::string{value};
  return json_string(value);
}

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto ch : bytes) {
    auto c = static_cast<unsigned char>(ch);
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0xF]);
  }
  return out;
}

void append_timestamp(std::string& out, int64_t unix_nanos) {
  auto secs = static_cast<time_t>(unix_nanos / 1'000'000'000);
  auto nanos = unix_nanos % 1'000'000'000;
  if (nanos < 0) { // before 1970: floor, not truncation
    nanos += 1'000'000'000;
    --secs;
  }
  auto micros = static_cast<int>(nanos / 1000);
  // The date and time to the second change once a second: the trace writer
  // formats up to millions of stamps a second, so it is kept per thread.
  // (A separate flag: every time_t, -1 included, is a valid second.)
  thread_local bool cache_valid = false;
  thread_local time_t cached_secs = 0;
  thread_local char cached[21];
  if (!cache_valid || secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    fmt::format_to_n(cached, sizeof cached, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
    cached_secs = secs;
    cache_valid = true;
  }
  char digits[7];
  for (int i = 5; i >= 0; --i) {
    digits[i] = static_cast<char>('0' + micros % 10);
    micros /= 10;
  }
  digits[6] = 'Z';
  out.append(cached, 20);
  out.append(digits, 7);
}

std::string format_timestamp(int64_t unix_nanos) {
  std::string out;
  append_timestamp(out, unix_nanos);
  return out;
}

} // namespace convoke
