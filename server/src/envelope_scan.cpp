#include "envelope_scan.hpp"

#include <cstring>

#include "convoke/proto/codec.hpp"

namespace convoke::server {

namespace {

constexpr uint32_t varint_wt = 0;
constexpr uint32_t fixed64_wt = 1;
constexpr uint32_t len_wt = 2;
constexpr uint32_t fixed32_wt = 5;

bool get_varint(const char*& p, const char* end, uint64_t& v) {
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

/// Reads one field header and its value. For length-delimited fields,
/// `bytes` views the value.
bool next_field(const char*& p, const char* end, uint32_t& field, uint32_t& wt, uint64_t& v,
                std::string_view& bytes) {
  uint64_t key = 0;
  if (!get_varint(p, end, key) || key > UINT32_MAX)
    return false;
  field = static_cast<uint32_t>(key >> 3);
  wt = static_cast<uint32_t>(key & 7);
  if (field == 0)
    return false;
  switch (wt) {
  case varint_wt:
    return get_varint(p, end, v);
  case fixed64_wt:
    if (end - p < 8)
      return false;
    p += 8;
    return true;
  case len_wt: {
    uint64_t len = 0;
    if (!get_varint(p, end, len) || static_cast<uint64_t>(end - p) < len)
      return false;
    bytes = std::string_view{p, static_cast<size_t>(len)};
    p += len;
    return true;
  }
  case fixed32_wt:
    if (end - p < 4)
      return false;
    p += 4;
    return true;
  default:
    return false; // groups and invalid wire types: let the full parser decide
  }
}

/// UTF-8 validation as strict as protobuf's (no overlongs, no surrogates).
bool valid_utf8(std::string_view s) {
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
      cp = *p & 0x1F;
    } else if ((*p & 0xF0) == 0xE0) {
      n = 2;
      cp = *p & 0x0F;
    } else if ((*p & 0xF8) == 0xF0) {
      n = 3;
      cp = *p & 0x07;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) <= n)
      return false;
    for (size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF
        || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += n + 1;
  }
  return true;
}

/// A headers map entry: key = 1, value = 2, both strings.
bool valid_map_entry(std::string_view entry) {
  auto p = entry.data();
  auto end = p + entry.size();
  while (p < end) {
    uint32_t field = 0, wt = 0;
    uint64_t v = 0;
    std::string_view bytes;
    if (!next_field(p, end, field, wt, v, bytes))
      return false;
    if ((field == 1 || field == 2) && (wt != len_wt || !valid_utf8(bytes)))
      return false;
  }
  return true;
}

bool scan_envelope(std::string_view env, envelope_view& out) {
  auto p = env.data();
  auto end = p + env.size();
  while (p < end) {
    uint32_t field = 0, wt = 0;
    uint64_t v = 0;
    std::string_view bytes;
    if (!next_field(p, end, field, wt, v, bytes))
      return false;
    switch (field) {
    case 2: // sender (overridden by the stamp, but must still parse)
    case 6: // content_type
      if (wt != len_wt || !valid_utf8(bytes))
        return false;
      break;
    case 3:
      if (wt != len_wt || !valid_utf8(bytes))
        return false;
      out.recipient = bytes;
      break;
    case 4:
      if (wt != len_wt || !valid_utf8(bytes))
        return false;
      out.route = bytes;
      break;
    case 5:
      if (wt != len_wt)
        return false;
      out.payload = bytes;
      break;
    case 7:
      if (wt != len_wt || !valid_map_entry(bytes))
        return false;
      break;
    case 8:
      if (wt != len_wt)
        return false;
      out.trace_id = bytes;
      break;
    case 1:  // message_id (overridden)
    case 10: // relayed_unix_nanos (overridden)
    case 13: // in_reply_to
      if (wt != varint_wt)
        return false;
      break;
    case 9:
      if (wt != varint_wt)
        return false;
      out.sent_ns = static_cast<int64_t>(v);
      break;
    case 11:
      if (wt != varint_wt)
        return false;
      out.client_seq = v;
      break;
    case 12:
      if (wt != varint_wt)
        return false;
      out.request_id = v;
      break;
    default:
      break; // unknown fields are kept and relayed unchanged
    }
  }
  return true;
}

void put_varint(char*& p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
}

size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

} // namespace

bool scan_envelope_frame(std::string_view body, envelope_view& out) {
  auto p = body.data();
  auto end = p + body.size();
  uint32_t field = 0, wt = 0;
  uint64_t v = 0;
  std::string_view env;
  // Exactly one top-level field, the envelope (a second one, or any other
  // oneof member, changes what receivers would see: full parser).
  if (!next_field(p, end, field, wt, v, env) || field != 3 || wt != len_wt || p != end)
    return false;
  out = envelope_view{};
  return scan_envelope(env, out);
}

size_t append_relayed_frame(std::vector<char>& out, std::string_view body, uint64_t message_id,
                            std::string_view sender, int64_t relayed_ns) {
  // Stamp = Envelope{message_id = 1, sender = 2, relayed_unix_nanos = 10}.
  auto stamp_size = 1 + varint_size(message_id) + 1 + varint_size(sender.size()) + sender.size() + 1
                    + varint_size(static_cast<uint64_t>(relayed_ns));
  auto suffix_size = 1 + varint_size(stamp_size) + stamp_size; // Frame.envelope = 3
  auto total = body.size() + suffix_size;
  auto offset = out.size();
  out.resize(offset + proto::header_size + total);
  auto p = out.data() + offset;
  proto::write_header(p, static_cast<uint32_t>(total));
  p += proto::header_size;
  std::memcpy(p, body.data(), body.size());
  p += body.size();
  *p++ = static_cast<char>((3 << 3) | len_wt);
  put_varint(p, stamp_size);
  *p++ = static_cast<char>((1 << 3) | varint_wt);
  put_varint(p, message_id);
  *p++ = static_cast<char>((2 << 3) | len_wt);
  put_varint(p, sender.size());
  std::memcpy(p, sender.data(), sender.size());
  p += sender.size();
  *p++ = static_cast<char>((10 << 3) | varint_wt);
  put_varint(p, static_cast<uint64_t>(relayed_ns));
  return offset + proto::header_size;
}

} // namespace convoke::server
