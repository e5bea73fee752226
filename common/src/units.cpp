#include "convoke/common/units.hpp"

#include <charconv>
#include <limits>

namespace convoke {

namespace {

// Splits "123unit" into number and unit; false if there is no leading number.
bool split_number(std::string_view text, uint64_t& num, std::string_view& unit) {
  auto first = text.data();
  auto last = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(first, last, num);
  if (ec != std::errc{} || ptr == first)
    return false;
  unit = std::string_view{ptr, static_cast<size_t>(last - ptr)};
  while (!unit.empty() && unit.front() == ' ')
    unit.remove_prefix(1);
  return true;
}

bool mul_overflows(uint64_t a, uint64_t b) {
  return b != 0 && a > std::numeric_limits<uint64_t>::max() / b;
}

} // namespace

std::optional<duration> parse_duration(std::string_view text) {
  uint64_t n = 0;
  std::string_view unit;
  if (!split_number(text, n, unit))
    return std::nullopt;
  uint64_t ms_per_unit = 0;
  if (unit == "ms")
    ms_per_unit = 1;
  else if (unit == "s")
    ms_per_unit = 1000;
  else if (unit == "m" || unit == "min")
    ms_per_unit = 60'000;
  else if (unit == "h")
    ms_per_unit = 3'600'000;
  else if (unit.empty() && n == 0)
    ms_per_unit = 1;
  else
    return std::nullopt;
  if (mul_overflows(n, ms_per_unit) || n * ms_per_unit > (1ull << 53))
    return std::nullopt;
  return duration{static_cast<int64_t>(n * ms_per_unit)};
}

std::string format_duration(duration d) {
  auto ms = d.count();
  if (ms == 0)
    return "0s";
  if (ms % 3'600'000 == 0)
    return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0)
    return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0)
    return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::optional<uint64_t> parse_size(std::string_view text) {
  uint64_t n = 0;
  std::string_view unit;
  if (!split_number(text, n, unit))
    return std::nullopt;
  uint64_t mul = 0;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k")
    mul = 1ull << 10;
  else if (unit == "M" || unit == "MiB")
    mul = 1ull << 20;
  else if (unit == "G" || unit == "GiB")
    mul = 1ull << 30;
  else
    return std::nullopt;
  if (mul_overflows(n, mul))
    return std::nullopt;
  return n * mul;
}

std::string format_size(uint64_t bytes) {
  if (bytes != 0 && bytes % (1ull << 30) == 0)
    return std::to_string(bytes >> 30) + "GiB";
  if (bytes != 0 && bytes % (1ull << 20) == 0)
    return std::to_string(bytes >> 20) + "MiB";
  if (bytes != 0 && bytes % (1ull << 10) == 0)
    return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes);
}

std::optional<bool> parse_bool(std::string_view text) {
  if (text == "true" || text == "yes" || text == "on" || text == "1")
    return true;
  if (text == "false" || text == "no" || text == "off" || text == "0")
    return false;
  return std::nullopt;
}

std::optional<host_port> parse_host_port(std::string_view text, std::string_view default_host,
                                         uint16_t default_port) {
  host_port out{std::string{default_host}, default_port};
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos)
      return std::nullopt;
    out.host = std::string{text.substr(1, close - 1)};
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':')
        return std::nullopt;
      port_text = rest.substr(1);
    }
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (colon > 0)
      out.host = std::string{text.substr(0, colon)};
    port_text = text.substr(colon + 1);
  } else if (!text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos) {
    port_text = text;
  } else if (!text.empty()) {
    out.host = std::string{text};
  }
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || value > 65535)
      return std::nullopt;
    out.port = static_cast<uint16_t>(value);
  }
  return out;
}

int64_t unix_nanos() noexcept {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}

} // namespace convoke
