#include "convoke/common/text.hpp"

#include <chrono>
#include <ctime>
#include <limits>

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

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2 != 0)
    return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]);
    int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::optional<int64_t> parse_timestamp(std::string_view s) {
  size_t i = 0;
  auto digits = [&](size_t n) -> std::optional<int> {
    if (i + n > s.size())
      return std::nullopt;
    int v = 0;
    for (size_t k = 0; k < n; ++k) {
      char c = s[i + k];
      if (c < '0' || c > '9')
        return std::nullopt;
      v = v * 10 + (c - '0');
    }
    i += n;
    return v;
  };
  auto expect = [&](std::string_view any) {
    if (i < s.size() && any.find(s[i]) != std::string_view::npos) {
      ++i;
      return true;
    }
    return false;
  };
  auto year = digits(4);
  if (!year || !expect("-"))
    return std::nullopt;
  auto month = digits(2);
  if (!month || !expect("-"))
    return std::nullopt;
  auto day = digits(2);
  if (!day || !expect("Tt "))
    return std::nullopt;
  auto hour = digits(2);
  if (!hour || !expect(":"))
    return std::nullopt;
  auto minute = digits(2);
  if (!minute || !expect(":"))
    return std::nullopt;
  auto second = digits(2);
  if (!second)
    return std::nullopt;
  int64_t frac = 0;
  if (expect(".")) {
    size_t n = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (n < 9)
        frac = frac * 10 + (s[i] - '0');
      ++n;
      ++i;
    }
    if (n == 0)
      return std::nullopt;
    for (; n < 9; ++n)
      frac *= 10;
  }
  int64_t offset_s = 0;
  if (!expect("Zz")) {
    bool minus = i < s.size() && s[i] == '-';
    if (!expect("+-"))
      return std::nullopt;
    auto oh = digits(2);
    if (!oh || !expect(":"))
      return std::nullopt;
    auto om = digits(2);
    if (!om || *oh > 23 || *om > 59)
      return std::nullopt;
    offset_s = (*oh * 3600 + *om * 60) * (minus ? -1 : 1);
  }
  if (i != s.size() || *year < 1970 || *hour > 23 || *minute > 59 || *second > 60)
    return std::nullopt;
  std::chrono::year_month_day ymd{std::chrono::year{*year},
                                  std::chrono::month{static_cast<unsigned>(*month)},
                                  std::chrono::day{static_cast<unsigned>(*day)}};
  if (!ymd.ok())
    return std::nullopt;
  int64_t days = std::chrono::sys_days{ymd}.time_since_epoch().count();
  int64_t secs = days * 86400 + *hour * 3600 + *minute * 60 + *second - offset_s;
  // Unix nanoseconds in an int64_t end in April 2262.
  if (secs < 0 || secs >= std::numeric_limits<int64_t>::max() / 1'000'000'000)
    return std::nullopt;
  return secs * 1'000'000'000 + frac;
}

} // namespace convoke
