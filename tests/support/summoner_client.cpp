#include "summoner_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include <gtest/gtest.h>

#include "convoke/common/net.hpp"

namespace convoke::test {

// -- json.dumps -----------------------------------------------------------------

namespace {

/// Decodes one UTF-8 sequence at `i` (advancing it); an invalid byte is
/// returned as its own value (Python strings cannot hold one; tests never
/// build such a string).
uint32_t next_code_point(std::string_view s, size_t& i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (len <= 1 || i + len > s.size()) {
    ++i;
    return b;
  }
  uint32_t cp = b & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void append_u(std::string& out, uint32_t unit) {
  char tmp[16];
  std::snprintf(tmp, sizeof(tmp), "\\u%04x", unit);
  out += tmp;
}

void dumps(std::string& out, const pyjson& v) {
  switch (v.type()) {
  case pyjson::value_t::null:
    out += "null";
    break;
  case pyjson::value_t::boolean:
    out += v.get<bool>() ? "true" : "false";
    break;
  case pyjson::value_t::number_integer:
  case pyjson::value_t::number_unsigned:
    out += v.dump();
    break;
  case pyjson::value_t::number_float: {
    auto d = v.get<double>();
    if (std::isnan(d))
      out += "NaN";
    else if (std::isinf(d))
      out += d > 0 ? "Infinity" : "-Infinity";
    else
      out += v.dump(); // shortest round trip, like repr()
    break;
  }
  case pyjson::value_t::string:
    out += py_json_string(v.get_ref<const std::string&>());
    break;
  case pyjson::value_t::array: {
    out += '[';
    bool first = true;
    for (auto& x : v) {
      if (!first)
        out += ", ";
      first = false;
      dumps(out, x);
    }
    out += ']';
    break;
  }
  case pyjson::value_t::object: {
    out += '{';
    bool first = true;
    for (auto& [k, x] : v.items()) {
      if (!first)
        out += ", ";
      first = false;
      out += py_json_string(k);
      out += ": ";
      dumps(out, x);
    }
    out += '}';
    break;
  }
  default:
    throw std::invalid_argument("py_json_dumps: not a JSON value");
  }
}

} // namespace

std::string py_json_string(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (size_t i = 0; i < s.size();) {
    auto cp = next_code_point(s, i);
    switch (cp) {
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
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (cp >= 0x20 && cp < 0x7F) {
        out += static_cast<char>(cp);
      } else if (cp > 0xFFFF) {
        cp -= 0x10000;
        append_u(out, 0xD800 + (cp >> 10));
        append_u(out, 0xDC00 + (cp & 0x3FF));
      } else {
        append_u(out, cp);
      }
    }
  }
  out += '"';
  return out;
}

std::string py_json_dumps(const pyjson& value) {
  std::string out;
  dumps(out, value);
  return out;
}

pyjson summoner_type_tree(const pyjson& payload) {
  switch (payload.type()) {
  case pyjson::value_t::string:
    return "str";
  case pyjson::value_t::boolean:
    return "bool";
  case pyjson::value_t::number_integer:
  case pyjson::value_t::number_unsigned:
    return "int";
  case pyjson::value_t::number_float:
    return "float";
  case pyjson::value_t::array: {
    auto out = pyjson::array();
    for (auto& x : payload)
      out.push_back(summoner_type_tree(x));
    return out;
  }
  case pyjson::value_t::object: {
    auto out = pyjson::object();
    for (auto& [k, x] : payload.items())
      out[k] = summoner_type_tree(x);
    return out;
  }
  default:
    return "null";
  }
}

std::string summoner_typed_line(const pyjson& payload, std::string_view version) {
  pyjson env = pyjson::object();
  env["_version"] = std::string{version};
  env["_payload"] = payload;
  env["_type"] = summoner_type_tree(payload);
  return py_json_dumps(env) + "\n";
}

// -- recover_with_types ------------------------------------------------------------

namespace {

/// fully_recover_json: strings that parse as JSON are replaced by what they
/// hold, recursively.
pyjson fully_recover(const pyjson& v) {
  if (v.is_string()) {
    auto parsed = pyjson::parse(v.get_ref<const std::string&>(), nullptr, false);
    if (parsed.is_discarded())
      return v;
    return fully_recover(parsed);
  }
  if (v.is_array()) {
    auto out = pyjson::array();
    for (auto& x : v)
      out.push_back(fully_recover(x));
    return out;
  }
  if (v.is_object()) {
    auto out = pyjson::object();
    for (auto& [k, x] : v.items())
      out[k] = fully_recover(x);
    return out;
  }
  return v;
}

/// cast_v0_0_1, for the values tests send.
pyjson cast(const pyjson& val, const pyjson& expected) {
  if (expected.is_string()) {
    auto& t = expected.get_ref<const std::string&>();
    if (t == "str")
      return val.is_string() ? val : pyjson(py_json_dumps(val));
    if (t == "bool")
      return val.is_boolean()  ? val
             : val.is_number() ? pyjson(val.get<double>() != 0)
             : val.is_string() ? pyjson(!val.get_ref<const std::string&>().empty())
                               : pyjson(!val.is_null() && !val.empty());
    if (t == "int")
      return val.is_number() ? pyjson(static_cast<int64_t>(val.get<double>())) : val;
    if (t == "float")
      return val.is_number() ? pyjson(val.get<double>()) : val;
    if (t == "null")
      return nullptr;
    return val;
  }
  if (expected.is_array() && val.is_array()) {
    auto out = pyjson::array();
    for (size_t i = 0; i < val.size(); ++i)
      out.push_back(i < expected.size() ? cast(val[i], expected[i]) : val[i]);
    return out;
  }
  if (expected.is_object() && val.is_object()) {
    auto out = pyjson::object();
    for (auto& [k, e] : expected.items())
      if (val.contains(k))
        out[k] = cast(val[k], e);
    for (auto& [k, x] : val.items())
      if (!expected.contains(k))
        out[k] = x;
    return out;
  }
  return val;
}

} // namespace

pyjson summoner_recover(std::string_view line) {
  auto obj = fully_recover(pyjson(std::string{line}));
  if (obj.is_string()) {
    auto s = obj.get<std::string>();
    if (!s.empty() && s.back() == '\n')
      s.pop_back();
    return s;
  }
  if (!obj.is_object() || !obj.contains("remote_addr") || !obj.contains("content"))
    return obj;
  auto& content = obj["content"];
  if (!content.is_object() || !content.contains("_version") || !content.contains("_payload")
      || !content.contains("_type"))
    return obj;
  pyjson out = pyjson::object();
  out["remote_addr"] = obj["remote_addr"];
  out["content"] = cast(content["_payload"], content["_type"]);
  return out;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((b >> 5) == 0x6) {
      len = 2;
      cp = b & 0x1F;
    } else if ((b >> 4) == 0xE) {
      len = 3;
      cp = b & 0x0F;
    } else if ((b >> 3) == 0x1E) {
      len = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size())
      return false;
    for (size_t k = 1; k < len; ++k) {
      auto c = static_cast<unsigned char>(s[i + k]);
      if ((c >> 6) != 0x2)
        return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// -- the client ----------------------------------------------------------------------

namespace {

int connect_v4(uint16_t port, const std::string* source, const int* rcvbuf) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error("socket failed");
  if (rcvbuf)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, rcvbuf, sizeof(*rcvbuf));
  if (source) {
    sockaddr_in from{};
    from.sin_family = AF_INET;
    if (::inet_pton(AF_INET, source->c_str(), &from.sin_addr) != 1
        || ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0) {
      ::close(fd);
      throw std::runtime_error("cannot bind to " + *source);
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    throw std::runtime_error("connect failed");
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

} // namespace

summoner_client::summoner_client(uint16_t port, const std::string& host) {
  auto res = net::tcp_connect(host, port, 2s);
  if (!res)
    throw std::runtime_error(res.error().text);
  fd_ = *res;
  net::set_blocking(fd_, true);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

summoner_client summoner_client::from_address(uint16_t port, const std::string& source) {
  summoner_client c;
  c.fd_ = connect_v4(port, &source, nullptr);
  return c;
}

summoner_client summoner_client::with_receive_buffer(uint16_t port, int bytes) {
  summoner_client c;
  c.fd_ = connect_v4(port, nullptr, &bytes);
  return c;
}

summoner_client::~summoner_client() {
  close();
}

summoner_client::summoner_client(summoner_client&& other) noexcept {
  *this = std::move(other);
}

summoner_client& summoner_client::operator=(summoner_client&& other) noexcept {
  close();
  fd_ = std::exchange(other.fd_, -1);
  buf_ = std::move(other.buf_);
  eof_ = other.eof_;
  received_ = other.received_;
  return *this;
}

void summoner_client::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

std::string summoner_client::local_addr() const {
  return "127.0.0.1:" + std::to_string(local_port());
}

uint16_t summoner_client::local_port() const {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return 0;
  return ntohs(addr.sin_port);
}

bool summoner_client::send_raw(std::string_view bytes) {
  return fd_ >= 0 && net::write_all(fd_, bytes.data(), bytes.size());
}

bool summoner_client::send_line(std::string_view text) {
  std::string line{text};
  line += '\n';
  return send_raw(line);
}

bool summoner_client::send_typed(const pyjson& payload) {
  return send_raw(summoner_typed_line(payload));
}

void summoner_client::shutdown_write() {
  if (fd_ >= 0)
    ::shutdown(fd_, SHUT_WR);
}

bool summoner_client::fill(std::chrono::steady_clock::time_point deadline) {
  if (eof_ || fd_ < 0)
    return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0)
    return false;
  pollfd pfd{fd_, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
    return false;
  char tmp[65536];
  auto n = ::recv(fd_, tmp, sizeof(tmp), 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  buf_.append(tmp, static_cast<size_t>(n));
  received_ += static_cast<uint64_t>(n);
  return true;
}

std::optional<summoner_line> summoner_client::read(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t scanned = 0;
  for (;;) {
    auto pos = buf_.find('\n', scanned);
    if (pos != std::string::npos || (eof_ && !buf_.empty())) {
      summoner_line out;
      out.terminated = pos != std::string::npos;
      size_t used = out.terminated ? pos + 1 : buf_.size();
      out.raw = buf_.substr(0, out.terminated ? pos : buf_.size());
      buf_.erase(0, used);
      if (used > summoner_sdk_line_limit)
        ADD_FAILURE() << "a line of " << used << " bytes: longer than the SDK's "
                      << summoner_sdk_line_limit << " byte limit (it would drop it or crash)";
      if (!valid_utf8(out.raw))
        ADD_FAILURE() << "a line that is not UTF-8: the SDK's data.decode() would raise";
      out.warning = out.raw.rfind("Warning:", 0) == 0;
      if (!out.warning) {
        auto j = nlohmann::json::parse(out.raw, nullptr, false);
        if (j.is_object() && j.size() == 2 && j.contains("remote_addr")
            && j["remote_addr"].is_string() && j.contains("content") && j["content"].is_string()) {
          out.relay = true;
          out.remote_addr = j["remote_addr"].get<std::string>();
          out.content = j["content"].get<std::string>();
        }
      }
      out.recovered = summoner_recover(out.raw);
      return out;
    }
    scanned = buf_.size();
    if (!fill(deadline))
      return std::nullopt;
  }
}

std::optional<summoner_line> summoner_client::read_relay(std::chrono::milliseconds timeout,
                                                         bool skip_warnings) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    auto line = read(std::max(left, std::chrono::milliseconds{0}));
    if (!line || line->relay)
      return line;
    if (!(skip_warnings && line->warning)) {
      ADD_FAILURE() << "expected a relay line, got: " << line->raw;
      return std::nullopt;
    }
  }
}

std::optional<summoner_line> summoner_client::read_warning(std::chrono::milliseconds timeout,
                                                           size_t* skipped) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    auto line = read(std::max(left, std::chrono::milliseconds{0}));
    if (!line || line->warning)
      return line;
    if (skipped)
      ++*skipped;
  }
}

bool summoner_client::wait_closed(std::chrono::milliseconds timeout,
                                  std::vector<summoner_line>* before) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    auto line = read(std::max(left, std::chrono::milliseconds{0}));
    if (line) {
      if (before)
        before->push_back(std::move(*line));
      continue;
    }
    return eof();
  }
}

} // namespace convoke::test
