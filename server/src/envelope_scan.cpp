#include "envelope_scan.hpp"

#include <cstring>

#include "convoke/proto/codec.hpp"
#include "convoke/proto/wire_format.hpp"

namespace convoke::server {

namespace {

using namespace proto::wire;

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
  bool ok = true;
  return for_each_field(entry,
                        [&](const field& f) {
                          if ((f.number == 1 || f.number == 2)
                              && (f.type != length_type || !valid_utf8(f.bytes)))
                            ok = false;
                        })
         && ok;
}

/// Envelope fields (wire.proto) and what a relay must check about them.
bool scan_envelope(std::string_view env, envelope_view& out) {
  bool ok = true;
  auto string_field = [&](const field& f) {
    ok = ok && f.type == length_type && valid_utf8(f.bytes);
    return f.bytes;
  };
  auto varint_field = [&](const field& f) {
    ok = ok && f.type == varint_type;
    return f.value;
  };
  auto well_formed = for_each_field(env, [&](const field& f) {
    switch (f.number) {
    case 2: // sender (overridden by the stamp, but must still parse)
    case 6: // content_type
      string_field(f);
      break;
    case 3:
      out.recipient = string_field(f);
      break;
    case 4:
      out.route = string_field(f);
      break;
    case 5:
      ok = ok && f.type == length_type;
      out.payload = f.bytes;
      break;
    case 7: // headers map entry
      ok = ok && f.type == length_type && valid_map_entry(f.bytes);
      break;
    case 8:
      ok = ok && f.type == length_type;
      out.trace_id = f.bytes;
      break;
    case 1:  // message_id (overridden)
    case 10: // relayed_unix_nanos (overridden)
    case 13: // in_reply_to
      varint_field(f);
      break;
    case 9:
      out.sent_ns = static_cast<int64_t>(varint_field(f));
      break;
    case 11:
      out.client_seq = varint_field(f);
      break;
    case 12:
      out.request_id = varint_field(f);
      break;
    default:
      break; // unknown fields are kept and relayed unchanged
    }
  });
  return well_formed && ok;
}

} // namespace

bool scan_envelope_frame(std::string_view body, envelope_view& out) {
  auto p = body.data();
  auto end = p + body.size();
  field env;
  // Exactly one top-level field, the envelope (a second one, or any other
  // oneof member, changes what receivers would see: full parser).
  if (!next_field(p, end, env) || env.number != 3 || env.type != length_type || p != end)
    return false;
  out = envelope_view{};
  return scan_envelope(env.bytes, out);
}

size_t append_relayed_frame(std::vector<char>& out, std::string_view body, uint64_t message_id,
                            std::string_view sender, int64_t relayed_ns) {
  // Stamp = Envelope{message_id = 1, sender = 2, relayed_unix_nanos = 10}.
  auto relayed = static_cast<uint64_t>(relayed_ns);
  auto stamp_size
    = 1 + varint_size(message_id) + bytes_field_size(2, sender.size()) + 1 + varint_size(relayed);
  auto suffix_size = bytes_field_size(3, stamp_size); // Frame.envelope = 3
  auto total = body.size() + suffix_size;
  auto offset = out.size();
  out.resize(offset + proto::header_size + total);
  auto p = out.data() + offset;
  proto::write_header(p, static_cast<uint32_t>(total));
  p += proto::header_size;
  std::memcpy(p, body.data(), body.size());
  p += body.size();
  put_varint(p, (3 << 3) | length_type);
  put_varint(p, stamp_size);
  put_varint(p, (1 << 3) | varint_type);
  put_varint(p, message_id);
  put_varint(p, (2 << 3) | length_type);
  put_varint(p, sender.size());
  std::memcpy(p, sender.data(), sender.size());
  p += sender.size();
  put_varint(p, (10 << 3) | varint_type);
  put_varint(p, relayed);
  return offset + proto::header_size;
}

} // namespace convoke::server
