#include "convoke/common/trace_context.hpp"

#include "convoke/common/text.hpp"

namespace convoke::trace {

namespace {

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; // upper case is invalid in traceparent
}

/// Decodes `text` (2 * n lower-case hex digits) into `out`; false if not hex
/// or all zeros.
bool decode_id(std::string_view text, std::string& out) noexcept {
  out.clear();
  bool nonzero = false;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    int hi = hex_digit(text[i]);
    int lo = hex_digit(text[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    auto byte = static_cast<char>((hi << 4) | lo);
    nonzero = nonzero || byte != 0;
    out.push_back(byte);
  }
  return nonzero;
}

} // namespace

std::optional<traceparent> parse_traceparent(std::string_view v) noexcept {
  // version "-" trace-id(32) "-" parent-id(16) "-" flags(2)
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
    return std::nullopt;
  int v_hi = hex_digit(v[0]);
  int v_lo = hex_digit(v[1]);
  if (v_hi < 0 || v_lo < 0)
    return std::nullopt;
  int version = (v_hi << 4) | v_lo;
  if (version == 0xff || (version == 0 && v.size() != 55) || (v.size() > 55 && v[55] != '-'))
    return std::nullopt;
  int f_hi = hex_digit(v[53]);
  int f_lo = hex_digit(v[54]);
  if (f_hi < 0 || f_lo < 0)
    return std::nullopt;
  traceparent out;
  try {
    if (!decode_id(v.substr(3, 32), out.trace_id) || !decode_id(v.substr(36, 16), out.parent_id))
      return std::nullopt;
  } catch (...) { // allocation failure: treat as absent
    return std::nullopt;
  }
  out.flags = static_cast<uint8_t>((f_hi << 4) | f_lo);
  return out;
}

std::string format_traceparent(std::string_view trace_id, std::string_view parent_id,
                               uint8_t flags) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "00-";
  out += to_hex(trace_id);
  out.push_back('-');
  out += to_hex(parent_id);
  out.push_back('-');
  out.push_back(digits[flags >> 4]);
  out.push_back(digits[flags & 15]);
  return out;
}

} // namespace convoke::trace
