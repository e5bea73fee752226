#include "wire.hpp"

#include <cstring>

#include "convoke/proto/wire_format.hpp"

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

using namespace proto::wire;

void put_header(std::string& out, uint32_t len) {
  char h[4] = {static_cast<char>(len >> 24), static_cast<char>(len >> 16),
               static_cast<char>(len >> 8), static_cast<char>(len)};
  out.append(h, 4);
}

} // namespace

void convoke_append_envelope(std::string& out, std::string_view recipient, std::string_view route,
                             std::string_view payload) {
  // Envelope: recipient = 3, route = 4, payload = 5. Frame: envelope = 3.
  size_t env = (recipient.empty() ? 0 : bytes_field_size(3, recipient.size()))
               + (route.empty() ? 0 : bytes_field_size(4, route.size()))
               + bytes_field_size(5, payload.size());
  size_t frame = bytes_field_size(3, env);
  put_header(out, static_cast<uint32_t>(frame));
  put_varint(out, (3 << 3) | 2);
  put_varint(out, env);
  if (!recipient.empty())
    put_bytes_field(out, 3, recipient);
  if (!route.empty())
    put_bytes_field(out, 4, route);
  put_bytes_field(out, 5, payload);
}

void convoke_append_hello(std::string& out, std::string_view name, std::string_view route) {
  std::vector<std::string> routes;
  if (!route.empty())
    routes.emplace_back(route);
  convoke_append_hello(out, name, routes);
}

void convoke_append_hello(std::string& out, std::string_view name,
                          const std::vector<std::string>& routes) {
  std::string hello;
  put_varint(hello, (1 << 3) | 0); // protocol_version
  put_varint(hello, convoke_hello_version);
  put_bytes_field(hello, 2, name);
  for (auto& route : routes)
    put_bytes_field(hello, 5, route); // routes
  put_bytes_field(hello, 6, "convoke-bench");
  std::string frame;
  put_bytes_field(frame, 1, hello); // Frame.hello = 1
  put_header(out, static_cast<uint32_t>(frame.size()));
  out += frame;
}

void convoke_append_heartbeat_reply(std::string& out, uint64_t seq) {
  std::string hb;
  put_varint(hb, (3 << 3) | 0); // reply_to = 3
  put_varint(hb, seq);
  std::string frame;
  put_bytes_field(frame, 4, hb); // Frame.heartbeat = 4
  put_header(out, static_cast<uint32_t>(frame.size()));
  out += frame;
}

void convoke_append_goodbye(std::string& out) {
  std::string bye;
  put_bytes_field(bye, 1, "client_exit"); // Goodbye.code = 1
  std::string frame;
  put_bytes_field(frame, 8, bye); // Frame.goodbye = 8
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
    for_each_field(frame, [&](const field& top) {
      auto bytes = top.bytes;
      switch (top.number) {
      case 2:
        ev.kind = convoke_event::welcome;
        for_each_field(bytes, [&](const field& f) {
          if (f.number == 4) // Welcome.server_name
            ev.text = f.bytes;
        });
        break;
      case 3: // version 1: a relayed Envelope (payload = 5)
        ev.kind = convoke_event::envelope;
        for_each_field(bytes, [&](const field& f) {
          if (f.number == 5)
            ev.payload = f.bytes;
        });
        break;
      case 9: // version 2: Delivery{..., envelope = 4}, the payload is envelope field 5
        ev.kind = convoke_event::envelope;
        for_each_field(bytes, [&](const field& d) {
          if (d.number == 4)
            for_each_field(d.bytes, [&](const field& f) {
              if (f.number == 5)
                ev.payload = f.bytes;
            });
        });
        break;
      case 4:
        ev.kind = convoke_event::heartbeat;
        for_each_field(bytes, [&](const field& f) {
          if (f.number == 2)
            ev.heartbeat_seq = f.value;
        });
        break;
      case 7:
        ev.kind = convoke_event::notice;
        for_each_field(bytes, [&](const field& f) {
          if (f.number == 2 || f.number == 3)
            ev.text = f.bytes;
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
