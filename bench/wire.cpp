#include "wire.hpp"

#include <cstring>

namespace convoke::bench {

void write_payload_header(char* dst, const payload_header& h) {
  std::memcpy(dst, &h.seq, 8);
  std::memcpy(dst + 8, &h.sent_ns, 8);
  std::memcpy(dst + 16, &h.publisher, 4);
}

payload_header read_payload_header(const char* src) {
  payload_header h{};
  std::memcpy(&h.seq, src, 8);
  std::memcpy(&h.sent_ns, src + 8, 8);
  std::memcpy(&h.publisher, src + 16, 4);
  return h;
}

namespace {

// -- protobuf wire format helpers ---------------------------------------------

size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_len_field(std::string& out, uint32_t field, std::string_view bytes) {
  put_varint(out, (field << 3) | 2);
  put_varint(out, bytes.size());
  out.append(bytes);
}

size_t len_field_size(uint32_t field, size_t len) {
  return varint_size((field << 3) | 2) + varint_size(len) + len;
}

void put_header(std::string& out, uint32_t len) {
  char h[4] = {static_cast<char>(len >> 24), static_cast<char>(len >> 16),
               static_cast<char>(len >> 8), static_cast<char>(len)};
  out.append(h, 4);
}

bool get_varint(const char*& p, const char* end, uint64_t& v) {
  v = 0;
  for (int shift = 0; p < end && shift < 64; shift += 7) {
    auto b = static_cast<uint8_t>(*p++);
    v |= uint64_t{b & 0x7Fu} << shift;
    if (b < 0x80)
      return true;
  }
  return false;
}

/// Iterates the fields of a message: f(field, wire_type, varint, bytes).
template <class F>
bool for_each_field(std::string_view msg, F&& f) {
  auto p = msg.data();
  auto end = p + msg.size();
  while (p < end) {
    uint64_t key = 0;
    if (!get_varint(p, end, key))
      return false;
    auto field = static_cast<uint32_t>(key >> 3);
    auto wt = key & 7;
    uint64_t v = 0;
    std::string_view bytes;
    switch (wt) {
    case 0:
      if (!get_varint(p, end, v))
        return false;
      break;
    case 1:
      if (end - p < 8)
        return false;
      p += 8;
      break;
    case 2: {
      uint64_t len = 0;
      if (!get_varint(p, end, len) || static_cast<uint64_t>(end - p) < len)
        return false;
      bytes = std::string_view{p, static_cast<size_t>(len)};
      p += len;
      break;
    }
    case 5:
      if (end - p < 4)
        return false;
      p += 4;
      break;
    default:
      return false;
    }
    f(field, wt, v, bytes);
  }
  return true;
}

} // namespace

void convoke_append_envelope(std::string& out, std::string_view recipient, std::string_view route,
                             std::string_view payload) {
  // Envelope: recipient = 3, route = 4, payload = 5. Frame: envelope = 3.
  size_t env = (recipient.empty() ? 0 : len_field_size(3, recipient.size()))
               + (route.empty() ? 0 : len_field_size(4, route.size()))
               + len_field_size(5, payload.size());
  size_t frame = len_field_size(3, env);
  put_header(out, static_cast<uint32_t>(frame));
  put_varint(out, (3 << 3) | 2);
  put_varint(out, env);
  if (!recipient.empty())
    put_len_field(out, 3, recipient);
  if (!route.empty())
    put_len_field(out, 4, route);
  put_len_field(out, 5, payload);
}

void convoke_append_hello(std::string& out, std::string_view name) {
  std::string hello;
  put_varint(hello, (1 << 3) | 0); // protocol_version = 1
  put_varint(hello, 1);
  put_len_field(hello, 2, name);
  put_len_field(hello, 6, "convoke-bench");
  std::string frame;
  put_len_field(frame, 1, hello); // Frame.hello = 1
  put_header(out, static_cast<uint32_t>(frame.size()));
  out += frame;
}

void convoke_append_heartbeat_reply(std::string& out, uint64_t seq) {
  std::string hb;
  put_varint(hb, (3 << 3) | 0); // reply_to = 3
  put_varint(hb, seq);
  std::string frame;
  put_len_field(frame, 4, hb); // Frame.heartbeat = 4
  put_header(out, static_cast<uint32_t>(frame.size()));
  out += frame;
}

size_t convoke_parse(const char* data, size_t size,
                     const std::function<void(const convoke_event&)>& on_event) {
  size_t pos = 0;
  while (size - pos >= 4) {
    auto b = reinterpret_cast<const uint8_t*>(data + pos);
    uint32_t len = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
    if (len == 0 || len > (64u << 20))
      return SIZE_MAX;
    if (size - pos - 4 < len)
      break;
    std::string_view frame{data + pos + 4, len};
    convoke_event ev;
    for_each_field(frame, [&](uint32_t field, uint64_t, uint64_t, std::string_view bytes) {
      switch (field) {
      case 2:
        ev.kind = convoke_event::welcome;
        break;
      case 3:
        ev.kind = convoke_event::envelope;
        for_each_field(bytes, [&](uint32_t f, uint64_t, uint64_t, std::string_view v) {
          if (f == 5)
            ev.payload = v;
        });
        break;
      case 4:
        ev.kind = convoke_event::heartbeat;
        for_each_field(bytes, [&](uint32_t f, uint64_t, uint64_t v, std::string_view) {
          if (f == 2)
            ev.heartbeat_seq = v;
        });
        break;
      case 7:
        ev.kind = convoke_event::notice;
        for_each_field(bytes, [&](uint32_t f, uint64_t, uint64_t, std::string_view v) {
          if (f == 2 || f == 3)
            ev.text = v;
        });
        break;
      case 8:
        ev.kind = convoke_event::goodbye;
        break;
      }
    });
    on_event(ev);
    pos += 4 + len;
  }
  return pos;
}

void nats_append_connect(std::string& out, std::string_view name) {
  out += "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"";
  out += name;
  out += "\"}\r\n";
}

void nats_append_sub(std::string& out, std::string_view subject, int sid) {
  out += "SUB ";
  out += subject;
  out += ' ';
  out += std::to_string(sid);
  out += "\r\n";
}

void nats_append_pub(std::string& out, std::string_view subject, std::string_view payload) {
  out += "PUB ";
  out += subject;
  out += ' ';
  out += std::to_string(payload.size());
  out += "\r\n";
  out += payload;
  out += "\r\n";
}

size_t nats_parse(const char* data, size_t size,
                  const std::function<void(const nats_event&)>& on_event) {
  size_t pos = 0;
  while (pos < size) {
    auto nl = static_cast<const char*>(std::memchr(data + pos, '\n', size - pos));
    if (nl == nullptr)
      break;
    std::string_view line{data + pos, static_cast<size_t>(nl - (data + pos))};
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    auto after_line = static_cast<size_t>(nl - data) + 1;
    nats_event ev;
    if (line.rfind("MSG ", 0) == 0) {
      // MSG <subject> <sid> [reply-to] <#bytes>
      auto sp = line.rfind(' ');
      size_t n = 0;
      for (auto c : line.substr(sp + 1))
        n = n * 10 + static_cast<size_t>(c - '0');
      if (size - after_line < n + 2)
        break; // payload not complete yet
      ev.kind = nats_event::msg;
      ev.payload = std::string_view{data + after_line, n};
      on_event(ev);
      pos = after_line + n + 2;
      continue;
    }
    if (line == "PING")
      ev.kind = nats_event::ping;
    else if (line == "PONG")
      ev.kind = nats_event::pong;
    else if (line.rfind("-ERR", 0) == 0) {
      ev.kind = nats_event::err;
      ev.text = line;
    }
    on_event(ev);
    pos = after_line;
  }
  return pos;
}

} // namespace convoke::bench
