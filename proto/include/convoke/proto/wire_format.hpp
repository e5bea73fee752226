#pragma once

/// @file
/// Protobuf wire-format primitives (varints, field headers) for code that
/// walks or writes encoded messages without generated classes: the relay's
/// fast path (server/src/envelope_scan.cpp) and the load generator.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace convoke::proto::wire {

inline constexpr uint32_t varint_type = 0;
inline constexpr uint32_t fixed64_type = 1;
inline constexpr uint32_t length_type = 2;
inline constexpr uint32_t fixed32_type = 5;

/// Bytes needed to encode `v` as a varint.
inline size_t varint_size(uint64_t v) noexcept {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

/// Writes `v` at `p` and advances it.
inline void put_varint(char*& p, uint64_t v) noexcept {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
}

/// Appends `v` to `out`.
inline void put_varint(std::string& out, uint64_t v) {
  char buf[10];
  char* p = buf;
  put_varint(p, v);
  out.append(buf, static_cast<size_t>(p - buf));
}

/// Reads a varint at `p` (advancing it); false if truncated or too long.
inline bool get_varint(const char*& p, const char* end, uint64_t& v) noexcept {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (p == end)
      return false;
    auto b = static_cast<uint8_t>(*p++);
    v |= uint64_t{b & 0x7Fu} << shift;
    if (b < 0x80)
      return true;
  }
  return false;
}

/// Reads a varint of at most 5 bytes (tags and lengths, as protobuf's own
/// parser limits them) whose value fits `max`.
inline bool get_varint32(const char*& p, const char* end, uint64_t& v, uint64_t max) noexcept {
  v = 0;
  for (int i = 0; i < 5; ++i) {
    if (p == end)
      return false;
    auto b = static_cast<uint8_t>(*p++);
    v |= uint64_t{b & 0x7Fu} << (7 * i);
    if (b < 0x80)
      return v <= max;
  }
  return false;
}

/// UTF-8 validation as strict as protobuf's for proto3 `string` fields (no
/// overlong forms, no surrogates, nothing above U+10FFFF).
inline bool valid_utf8(std::string_view s) noexcept {
  auto p = reinterpret_cast<const uint8_t*>(s.data());
  auto end = p + s.size();
  while (p < end) {
    if (*p < 0x80) {
      ++p;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0;
    if ((*p & 0xE0) == 0xC0) {
      n = 1;
      cp = *p & 0x1Fu;
    } else if ((*p & 0xF0) == 0xE0) {
      n = 2;
      cp = *p & 0x0Fu;
    } else if ((*p & 0xF8) == 0xF0) {
      n = 3;
      cp = *p & 0x07u;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) <= n)
      return false;
    for (size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF
        || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += n + 1;
  }
  return true;
}

/// One field as read by `next_field`.
struct field {
  uint32_t number = 0;
  uint32_t type = 0;
  uint64_t value = 0;     // varint fields
  std::string_view bytes; // length-delimited fields
};

/// Reads the next field at `p` (advancing it). False on malformed input, on
/// field number 0, on group wire types (unused by Convoke), and on tags or
/// lengths longer than protobuf's parser accepts (5 bytes; lengths up to
/// INT32_MAX), so nothing passes here that a receiver would reject.
inline bool next_field(const char*& p, const char* end, field& f) noexcept {
  uint64_t key = 0;
  if (!get_varint32(p, end, key, UINT32_MAX))
    return false;
  f.number = static_cast<uint32_t>(key >> 3);
  f.type = static_cast<uint32_t>(key & 7);
  if (f.number == 0)
    return false;
  switch (f.type) {
  case varint_type:
    return get_varint(p, end, f.value);
  case fixed64_type:
    if (end - p < 8)
      return false;
    p += 8;
    return true;
  case length_type: {
    uint64_t len = 0;
    if (!get_varint32(p, end, len, INT32_MAX) || static_cast<uint64_t>(end - p) < len)
      return false;
    f.bytes = std::string_view{p, static_cast<size_t>(len)};
    p += len;
    return true;
  }
  case fixed32_type:
    if (end - p < 4)
      return false;
    p += 4;
    return true;
  default:
    return false;
  }
}

/// Calls `fn(field)` for every field of `msg`; false if `msg` is malformed.
template <class F>
bool for_each_field(std::string_view msg, F&& fn) {
  auto p = msg.data();
  auto end = p + msg.size();
  field f;
  while (p < end) {
    if (!next_field(p, end, f))
      return false;
    fn(f);
  }
  return true;
}

/// Appends a length-delimited field.
inline void put_bytes_field(std::string& out, uint32_t number, std::string_view bytes) {
  put_varint(out, (uint64_t{number} << 3) | length_type);
  put_varint(out, bytes.size());
  out.append(bytes);
}

/// Encoded size of a length-delimited field with `len` bytes of content.
inline size_t bytes_field_size(uint32_t number, size_t len) noexcept {
  return varint_size((uint64_t{number} << 3) | length_type) + varint_size(len) + len;
}

} // namespace convoke::proto::wire
