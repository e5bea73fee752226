#include "summoner_wire.hpp"

#include <array>
#include <cstring>

#include "convoke/proto/codec.hpp"
#include "convoke/proto/rules.hpp"
#include "convoke/proto/wire_format.hpp"
#include "convoke/v1/wire.pb.h"

namespace convoke::server::summoner {

namespace {

using namespace proto::wire;

// -- JSON ----------------------------------------------------------------------

constexpr size_t max_json_depth = 256;

bool json_ws(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

void skip_ws(const char*& p, const char* end) noexcept {
  while (p != end && json_ws(*p))
    ++p;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/// Reads the 4 hex digits of a \u escape at `p` (advancing it).
bool read_hex4(const char*& p, const char* end, uint32_t& cp) noexcept {
  if (end - p < 4)
    return false;
  cp = 0;
  for (int i = 0; i < 4; ++i) {
    auto v = hex_value(p[i]);
    if (v < 0)
      return false;
    cp = (cp << 4) | static_cast<uint32_t>(v);
  }
  p += 4;
  return true;
}

/// A JSON string at `p` (on its opening quote). Raw bytes must be valid
/// UTF-8 and no control character; a \u escape of a surrogate must be a
/// proper pair (strict parsers such as nlohmann's refuse lone ones).
bool scan_string(const char*& p, const char* end) noexcept {
  ++p; // "
  const char* run = p;
  bool high = false; // bytes >= 0x80 since `run`
  auto check_run = [&](const char* to) {
    return !high || valid_utf8(std::string_view{run, static_cast<size_t>(to - run)});
  };
  while (p != end) {
    auto c = static_cast<unsigned char>(*p);
    if (c == '"') {
      if (!check_run(p))
        return false;
      ++p;
      return true;
    }
    if (c < 0x20)
      return false;
    if (c >= 0x80) {
      high = true;
      ++p;
      continue;
    }
    if (c != '\\') {
      ++p;
      continue;
    }
    if (!check_run(p))
      return false;
    ++p;
    if (p == end)
      return false;
    switch (*p++) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
      break;
    case 'u': {
      uint32_t cp = 0;
      if (!read_hex4(p, end, cp))
        return false;
      if (cp >= 0xDC00 && cp <= 0xDFFF)
        return false;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        uint32_t low = 0;
        if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
          return false;
        p += 2;
        if (!read_hex4(p, end, low) || low < 0xDC00 || low > 0xDFFF)
          return false;
      }
      break;
    }
    default:
      return false;
    }
    run = p;
    high = false;
  }
  return false;
}

bool digit(const char* p, const char* end) noexcept {
  return p != end && *p >= '0' && *p <= '9';
}

bool scan_number(const char*& p, const char* end) noexcept {
  if (*p == '-')
    ++p;
  if (!digit(p, end))
    return false;
  if (*p++ != '0')
    while (digit(p, end))
      ++p;
  if (p != end && *p == '.') {
    ++p;
    if (!digit(p, end))
      return false;
    while (digit(p, end))
      ++p;
  }
  if (p != end && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p != end && (*p == '+' || *p == '-'))
      ++p;
    if (!digit(p, end))
      return false;
    while (digit(p, end))
      ++p;
  }
  return true;
}

bool scan_literal(const char*& p, const char* end, std::string_view word) noexcept {
  if (static_cast<size_t>(end - p) < word.size() || std::memcmp(p, word.data(), word.size()) != 0)
    return false;
  p += word.size();
  return true;
}

/// One JSON value starting exactly at `p` (no whitespace before it),
/// nested at most max_json_depth deep, without recursion. Advances `p` past
/// it.
bool scan_value(const char*& p, const char* end) noexcept {
  std::array<bool, max_json_depth> in_object{}; // per level: object, else array
  size_t depth = 0;
  // An object member's key and ':' (after '{' or ',').
  auto member_key = [&]() {
    if (p == end || *p != '"' || !scan_string(p, end))
      return false;
    skip_ws(p, end);
    if (p == end || *p != ':')
      return false;
    ++p;
    skip_ws(p, end);
    return true;
  };
  for (;;) {
    // A value at p.
    if (p == end)
      return false;
    switch (*p) {
    case '{':
    case '[': {
      if (depth == max_json_depth)
        return false;
      bool object = *p == '{';
      in_object[depth++] = object;
      ++p;
      skip_ws(p, end);
      if (p != end && *p == (object ? '}' : ']')) {
        ++p;
        --depth;
        break; // an empty container is a complete value
      }
      if (object && !member_key())
        return false;
      continue; // the first element
    }
    case '"':
      if (!scan_string(p, end))
        return false;
      break;
    case 't':
      if (!scan_literal(p, end, "true"))
        return false;
      break;
    case 'f':
      if (!scan_literal(p, end, "false"))
        return false;
      break;
    case 'n':
      if (!scan_literal(p, end, "null"))
        return false;
      break;
    default:
      if (!scan_number(p, end))
        return false;
      break;
    }
    // After a complete value: close containers, or go on to the next element.
    for (;;) {
      if (depth == 0)
        return true;
      skip_ws(p, end);
      if (p == end)
        return false;
      bool object = in_object[depth - 1];
      if (*p == ',') {
        ++p;
        skip_ws(p, end);
        if (object && !member_key())
          return false;
        break; // the next element
      }
      if (*p != (object ? '}' : ']'))
        return false;
      ++p;
      --depth;
    }
  }
}

bool plain_version(std::string_view v) noexcept {
  if (v.empty())
    return false;
  for (auto c : v)
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '.'
          || c == '+' || c == '-'))
      return false;
  return true;
}

// The typed envelope, as json.dumps writes it.
constexpr std::string_view typed_open = R"({"_version": ")";
constexpr std::string_view typed_payload = R"(", "_payload": )";
constexpr std::string_view typed_type = R"(, "_type": )";
constexpr std::string_view typed_close = "}";

bool starts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

/// The SDK's typed envelope in its exact form, else false.
bool classify_typed(std::string_view line, line_message& out) {
  if (!starts_with(line, typed_open))
    return false;
  auto rest = line.substr(typed_open.size());
  auto quote = rest.find('"');
  if (quote == std::string_view::npos || !plain_version(rest.substr(0, quote)))
    return false;
  auto version = rest.substr(0, quote);
  rest = rest.substr(quote);
  if (!starts_with(rest, typed_payload))
    return false;
  rest.remove_prefix(typed_payload.size());
  const char* p = rest.data();
  const char* end = p + rest.size();
  const char* payload_at = p;
  if (!scan_value(p, end))
    return false;
  std::string_view payload{payload_at, static_cast<size_t>(p - payload_at)};
  rest = std::string_view{p, static_cast<size_t>(end - p)};
  if (!starts_with(rest, typed_type))
    return false;
  rest.remove_prefix(typed_type.size());
  p = rest.data();
  const char* type_at = p;
  if (!scan_value(p, end))
    return false;
  std::string_view type{type_at, static_cast<size_t>(p - type_at)};
  if (std::string_view{p, static_cast<size_t>(end - p)} != typed_close)
    return false;
  out.kind = line_kind::typed;
  out.payload = payload;
  out.version = version;
  out.type = type;
  return true;
}

// -- JSON output -----------------------------------------------------------------

/// Per byte: 0 = copied as is, else the size of its escape.
constexpr std::array<uint8_t, 256> escape_sizes = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 0x20; ++c)
    t[static_cast<size_t>(c)] = 6; // \u00XX
  for (char c : {'\b', '\f', '\n', '\r', '\t', '"', '\\'})
    t[static_cast<unsigned char>(c)] = 2;
  return t;
}();

constexpr std::string_view relay_open = R"({"remote_addr": )";
constexpr std::string_view relay_middle = R"(, "content": )";
constexpr std::string_view relay_close = "}\n";

constexpr std::string_view b64_open = R"({"content_type": )";
constexpr std::string_view b64_middle = R"(, "base64": ")";
constexpr std::string_view b64_close = "\"}";

constexpr char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void append_base64(std::string& out, std::string_view bytes) {
  auto at = out.size();
  out.resize(at + (bytes.size() + 2) / 3 * 4);
  auto dst = out.data() + at;
  auto src = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t{src[i]} << 16) | (uint32_t{src[i + 1]} << 8) | src[i + 2];
    *dst++ = b64_alphabet[v >> 18];
    *dst++ = b64_alphabet[(v >> 12) & 63];
    *dst++ = b64_alphabet[(v >> 6) & 63];
    *dst++ = b64_alphabet[v & 63];
  }
  if (auto left = bytes.size() - i; left > 0) {
    uint32_t v = uint32_t{src[i]} << 16;
    if (left == 2)
      v |= uint32_t{src[i + 1]} << 8;
    *dst++ = b64_alphabet[v >> 18];
    *dst++ = b64_alphabet[(v >> 12) & 63];
    *dst++ = left == 2 ? b64_alphabet[(v >> 6) & 63] : '=';
    *dst++ = '=';
  }
}

// -- protobuf output -------------------------------------------------------------

using E = v1::Envelope;

constexpr uint32_t map_key = 1;
constexpr uint32_t map_value = 2;

void put_bytes(char*& p, uint32_t number, std::string_view bytes) noexcept {
  put_varint(p, (uint64_t{number} << 3) | length_type);
  put_varint(p, bytes.size());
  if (!bytes.empty())
    std::memcpy(p, bytes.data(), bytes.size());
  p += bytes.size();
}

size_t header_entry_size(std::string_view key, std::string_view value) noexcept {
  return bytes_field_size(map_key, key.size()) + bytes_field_size(map_value, value.size());
}

void put_header(char*& p, std::string_view key, std::string_view value) noexcept {
  put_varint(p, (uint64_t{E::kHeadersFieldNumber} << 3) | length_type);
  put_varint(p, header_entry_size(key, value));
  put_bytes(p, map_key, key);
  put_bytes(p, map_value, value);
}

bool name_char(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.'
         || c == '_' || c == '-' || c == ':' || c == '@';
}

} // namespace

// -- line_splitter -----------------------------------------------------------------

line_splitter::line_splitter(size_t max_line) : max_line_(max_line) {}

void line_splitter::append(const char* data, size_t size) {
  if (size == 0)
    return;
  if (discarding_) {
    auto nl = static_cast<const char*>(std::memchr(data, '\n', size));
    if (nl == nullptr) {
      discard_size_ += size;
      return;
    }
    auto skipped = static_cast<size_t>(nl - data);
    discard_size_ += skipped;
    discarding_ = false;
    // The '\n' ends the line: if its start is still buffered (not reported
    // yet), the '\n' stays to end it there; if next() reported it already,
    // the '\n' goes too.
    if (reported_) {
      ++skipped;
      truncated_at_ = npos;
      tail_ = buf_.size();
    }
    data += skipped;
    size -= skipped;
    if (size == 0)
      return;
  }
  // The line that is still incomplete after this read starts after the
  // read's last '\n', or where it started before.
  auto base = buf_.size();
  buf_.insert(buf_.end(), data, data + size);
  auto last_nl = static_cast<const char*>(memrchr(data, '\n', size));
  if (last_nl != nullptr)
    tail_ = base + static_cast<size_t>(last_nl - data) + 1;
  auto tail_size = buf_.size() - tail_;
  if (tail_size > max_line_) {
    // Keep max_line + 1 bytes of it, enough for next() to see that it is
    // too long, and drop the rest of it from here on.
    buf_.resize(tail_ + max_line_ + 1);
    if (scan_ > buf_.size())
      scan_ = buf_.size();
    discarding_ = true;
    reported_ = false;
    truncated_at_ = tail_;
    discard_size_ = tail_size;
  }
}

line_splitter::result line_splitter::next(std::string_view& line) {
  for (;;) {
    auto begin = buf_.data();
    auto end = buf_.size();
    if (start_ == end)
      return result::none;
    if (scan_ < start_)
      scan_ = start_;
    auto nl = scan_ < end ? static_cast<const char*>(std::memchr(begin + scan_, '\n', end - scan_))
                          : nullptr;
    if (nl == nullptr) {
      scan_ = end;
      if (end - start_ > max_line_ && discarding_ && start_ == truncated_at_) {
        // The incomplete line at the end is too long (append() cut it).
        start_ = end;
        scan_ = end;
        reported_ = true;
        too_long_size_ = discard_size_;
        return result::too_long;
      }
      return result::none;
    }
    auto at = static_cast<size_t>(nl - begin);
    auto size = at - start_;
    auto line_start = start_;
    start_ = at + 1;
    scan_ = start_;
    if (size > max_line_) {
      // A whole too-long line in one read, or one append() cut and the end
      // of which has come since.
      too_long_size_ = line_start == truncated_at_ ? discard_size_ : size;
      if (line_start == truncated_at_)
        truncated_at_ = npos;
      return result::too_long;
    }
    if (size > 0 && begin[at - 1] == '\r')
      --size;
    line = std::string_view{begin + line_start, size};
    return result::line;
  }
}

bool line_splitter::take_last(std::string_view& line) {
  if (discarding_ || start_ >= buf_.size())
    return false;
  auto size = buf_.size() - start_;
  if (size > max_line_)
    return false;
  line = std::string_view{buf_.data() + start_, size};
  start_ = buf_.size();
  scan_ = start_;
  return true;
}

size_t line_splitter::buffered() const noexcept {
  return buf_.size() - start_;
}

size_t line_splitter::too_long_size() const noexcept {
  return too_long_size_;
}

bool line_splitter::discarding() const noexcept {
  return discarding_;
}

size_t line_splitter::max_line() const noexcept {
  return max_line_;
}

void line_splitter::compact() {
  if (start_ == 0)
    return;
  auto shift = [this](size_t& pos) { pos = pos >= start_ ? pos - start_ : 0; };
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start_));
  shift(scan_);
  shift(tail_);
  if (truncated_at_ != npos)
    truncated_at_ = truncated_at_ >= start_ ? truncated_at_ - start_ : npos;
  start_ = 0;
  // A read much larger than a line should not pin its memory for ever.
  if (buf_.empty() && buf_.capacity() > 4 * max_line_ + 65536)
    std::vector<char>().swap(buf_);
}

// -- classification ------------------------------------------------------------------

bool is_json(std::string_view text) {
  const char* p = text.data();
  const char* end = p + text.size();
  skip_ws(p, end);
  if (!scan_value(p, end))
    return false;
  skip_ws(p, end);
  return p == end;
}

line_message classify(std::string_view line) {
  line_message out;
  out.payload = line;
  if (classify_typed(line, out))
    return out;
  out.kind = is_json(line) ? line_kind::json : line_kind::text;
  return out;
}

void rebuild_typed(std::string& out, std::string_view version, std::string_view payload,
                   std::string_view type) {
  out.reserve(out.size() + typed_open.size() + version.size() + typed_payload.size()
              + payload.size() + typed_type.size() + type.size() + typed_close.size());
  out.append(typed_open);
  out.append(version);
  out.append(typed_payload);
  out.append(payload);
  out.append(typed_type);
  out.append(type);
  out.append(typed_close);
}

void append_envelope_frame(std::vector<char>& out, const line_message& msg, std::string_view route,
                           std::string_view remote_addr, int64_t sent_ns) {
  bool typed = msg.kind == line_kind::typed;
  auto content_type = msg.kind == line_kind::text ? text_content_type : json_content_type;
  auto sent = static_cast<uint64_t>(sent_ns);
  // Fields in number order, defaults left out, as protobuf writes them.
  size_t env = 0;
  if (!route.empty())
    env += bytes_field_size(E::kRouteFieldNumber, route.size());
  if (!msg.payload.empty())
    env += bytes_field_size(E::kPayloadFieldNumber, msg.payload.size());
  env += bytes_field_size(E::kContentTypeFieldNumber, content_type.size());
  env
    += bytes_field_size(E::kHeadersFieldNumber, header_entry_size(header_remote_addr, remote_addr));
  if (typed) {
    env += bytes_field_size(E::kHeadersFieldNumber, header_entry_size(header_type, msg.type));
    env += bytes_field_size(E::kHeadersFieldNumber, header_entry_size(header_version, msg.version));
  }
  if (sent != 0)
    env += varint_size(uint64_t{E::kSentUnixNanosFieldNumber} << 3) + varint_size(sent);
  auto total = bytes_field_size(v1::Frame::kEnvelopeFieldNumber, env);

  auto offset = out.size();
  out.resize(offset + proto::header_size + total);
  auto p = out.data() + offset;
  proto::write_header(p, static_cast<uint32_t>(total));
  p += proto::header_size;
  put_varint(p, (uint64_t{v1::Frame::kEnvelopeFieldNumber} << 3) | length_type);
  put_varint(p, env);
  if (!route.empty())
    put_bytes(p, E::kRouteFieldNumber, route);
  if (!msg.payload.empty())
    put_bytes(p, E::kPayloadFieldNumber, msg.payload);
  put_bytes(p, E::kContentTypeFieldNumber, content_type);
  put_header(p, header_remote_addr, remote_addr);
  if (typed) {
    put_header(p, header_type, msg.type);
    put_header(p, header_version, msg.version);
  }
  if (sent != 0) {
    put_varint(p, (uint64_t{E::kSentUnixNanosFieldNumber} << 3) | varint_type);
    put_varint(p, sent);
  }
}

// -- relay lines -------------------------------------------------------------------------

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  // Sized once, then written through a pointer: cheaper than appending
  // around each escape (JSON text is full of quotes).
  auto at = out.size();
  out.resize(at + json_string_size(s));
  char* d = out.data() + at;
  *d++ = '"';
  for (auto ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (escape_sizes[c] == 0) {
      *d++ = ch;
      continue;
    }
    *d++ = '\\';
    switch (c) {
    case '"':
      *d++ = '"';
      break;
    case '\\':
      *d++ = '\\';
      break;
    case '\b':
      *d++ = 'b';
      break;
    case '\f':
      *d++ = 'f';
      break;
    case '\n':
      *d++ = 'n';
      break;
    case '\r':
      *d++ = 'r';
      break;
    case '\t':
      *d++ = 't';
      break;
    default:
      *d++ = 'u';
      *d++ = '0';
      *d++ = '0';
      *d++ = hex[c >> 4];
      *d++ = hex[c & 15];
      break;
    }
  }
  *d = '"';
}

size_t json_string_size(std::string_view s) noexcept {
  size_t n = 2 + s.size();
  for (auto c : s) {
    auto e = escape_sizes[static_cast<unsigned char>(c)];
    if (e != 0)
      n += e - 1u;
  }
  return n;
}

void append_relay_line(std::string& out, std::string_view remote_addr, std::string_view content) {
  out.append(relay_open);
  append_json_string(out, remote_addr);
  out.append(relay_middle);
  append_json_string(out, content);
  out.append(relay_close);
}

size_t relay_line_size(std::string_view remote_addr, std::string_view content) noexcept {
  return relay_open.size() + json_string_size(remote_addr) + relay_middle.size()
         + json_string_size(content) + relay_close.size();
}

bool read_delivery(std::string_view frame_body, delivery_fields& out) {
  using D = v1::Delivery;
  out = delivery_fields{};
  bool ok = true;
  bool seen = false;
  std::string_view delivery;
  // Frame: exactly the delivery member (a message field given twice merges,
  // as protobuf does; the router writes it once).
  std::string_view deliveries[2];
  size_t count = 0;
  bool frame_ok = for_each_field(frame_body, [&](const field& f) {
    if (f.number != v1::Frame::kDeliveryFieldNumber || f.type != length_type) {
      ok = false;
      return;
    }
    if (count < 2)
      deliveries[count] = f.bytes;
    ++count;
  });
  if (!frame_ok || !ok || count != 1)
    return false;
  delivery = deliveries[0];
  auto read_envelope = [&](std::string_view env) {
    return for_each_field(env, [&](const field& f) {
      switch (f.number) {
      case E::kPayloadFieldNumber:
        ok = ok && f.type == length_type;
        out.payload = f.bytes;
        break;
      case E::kContentTypeFieldNumber:
        ok = ok && f.type == length_type;
        out.content_type = f.bytes;
        break;
      case E::kHeadersFieldNumber: {
        if (f.type != length_type) {
          ok = false;
          break;
        }
        std::string_view key;
        std::string_view value;
        bool entry_ok = true;
        bool well_formed = for_each_field(f.bytes, [&](const field& e) {
          if (e.number != map_key && e.number != map_value)
            return;
          entry_ok = entry_ok && e.type == length_type;
          (e.number == map_key ? key : value) = e.bytes;
        });
        ok = ok && well_formed && entry_ok;
        if (key == header_remote_addr)
          out.remote_addr = value;
        else if (key == header_version)
          out.version = value;
        else if (key == header_type)
          out.type = value;
        break;
      }
      default:
        break;
      }
    });
  };
  bool delivery_ok = for_each_field(delivery, [&](const field& f) {
    switch (f.number) {
    case D::kMessageIdFieldNumber:
      ok = ok && f.type == varint_type;
      out.message_id = f.value;
      break;
    case D::kSenderFieldNumber:
      ok = ok && f.type == length_type;
      out.sender = f.bytes;
      break;
    case D::kRelayedUnixNanosFieldNumber:
      ok = ok && f.type == varint_type;
      break;
    case D::kEnvelopeFieldNumber:
      if (f.type != length_type || !read_envelope(f.bytes))
        ok = false;
      seen = true;
      break;
    default:
      break;
    }
  });
  return delivery_ok && ok && seen;
}

namespace {

/// The rebuilt typed envelope is JSON only if its parts are.
bool typed_delivery(const delivery_fields& d) {
  return plain_version(d.version) && !d.type.empty() && is_json(d.type) && is_json(d.payload);
}

enum class content_form : uint8_t { typed, text, base64 };

content_form form_of(const delivery_fields& d) {
  if (!d.version.empty() && typed_delivery(d))
    return content_form::typed;
  if (valid_utf8(d.payload))
    return content_form::text;
  return content_form::base64;
}

void append_content(std::string& out, const delivery_fields& d, content_form form) {
  switch (form) {
  case content_form::typed:
    rebuild_typed(out, d.version, d.payload, d.type);
    break;
  case content_form::text:
    out.append(d.payload);
    break;
  case content_form::base64:
    out.append(b64_open);
    append_json_string(out, valid_utf8(d.content_type) ? d.content_type : std::string_view{});
    out.append(b64_middle);
    append_base64(out, d.payload);
    out.append(b64_close);
    break;
  }
}

} // namespace

void append_content(std::string& out, const delivery_fields& d) {
  append_content(out, d, form_of(d));
}

render_result render_deliveries(std::string_view frames, size_t max_line, std::string& out,
                                std::string& scratch) {
  render_result r;
  while (!frames.empty()) {
    if (frames.size() < proto::header_size) {
      ++r.malformed;
      break;
    }
    auto len = proto::read_header(frames.data());
    if (frames.size() - proto::header_size < len) {
      ++r.malformed;
      break;
    }
    auto body = frames.substr(proto::header_size, len);
    frames.remove_prefix(proto::header_size + len);
    delivery_fields d;
    if (!read_delivery(body, d)) {
      ++r.malformed;
      continue;
    }
    auto form = form_of(d);
    std::string_view content = d.payload;
    if (form != content_form::text) {
      scratch.clear();
      append_content(scratch, d, form);
      content = scratch;
    }
    auto addr = d.remote_addr.empty() ? d.sender : d.remote_addr;
    // Escaping at most sextuples a byte: measure only what might not fit.
    auto bound = relay_open.size() + relay_middle.size() + relay_close.size()
                 + 6 * (addr.size() + content.size()) + 4;
    if (bound > max_line && relay_line_size(addr, content) > max_line) {
      if (r.too_large == 0)
        r.first_too_large = d.message_id;
      r.last_too_large = d.message_id;
      ++r.too_large;
      continue;
    }
    append_relay_line(out, addr, content);
    ++r.lines;
  }
  return r;
}

// -- warnings and names --------------------------------------------------------------------

std::string warning_line(std::string_view code, std::string_view text) {
  if (code == "rate_limited")
    return std::string{warning_rate_limited};
  if (code == "idle_timeout")
    return std::string{warning_inactivity};
  if (code == "shutdown" || code == "lame_duck")
    return std::string{warning_shutdown};
  std::string out;
  out.reserve(9 + text.size() + code.size() + 4);
  out.append("Warning: ");
  auto one_line = [&](std::string_view s) {
    for (auto c : s)
      out.push_back(c == '\r' || c == '\n' ? ' ' : c);
  };
  one_line(text);
  out.append(" (");
  one_line(code);
  out.append(")\n");
  return out;
}

std::string remote_addr(std::string_view ip, uint16_t port) {
  std::string out;
  bool v6 = ip.find(':') != std::string_view::npos;
  out.reserve(ip.size() + 8);
  if (v6)
    out.push_back('[');
  out.append(ip);
  if (v6)
    out.push_back(']');
  out.push_back(':');
  out.append(std::to_string(port));
  return out;
}

std::string default_name(std::string_view ip, uint16_t port) {
  std::string out = "summoner@";
  // A zone ("fe80::1%eth0") or anything else outside the name alphabet
  // becomes '-'; an address too long for a name is cut before the port.
  auto port_text = ":" + std::to_string(port);
  auto room = proto::max_name_length - out.size() - port_text.size();
  for (size_t i = 0; i < ip.size() && i < room; ++i)
    out.push_back(name_char(ip[i]) ? ip[i] : '-');
  out.append(port_text);
  return out;
}

} // namespace convoke::server::summoner
