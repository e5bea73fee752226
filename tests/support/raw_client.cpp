#include "raw_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

#include "convoke/common/net.hpp"

namespace convoke::test {

raw_client::raw_client(uint16_t port, const std::string& host) {
  auto res = net::tcp_connect(host, port, 2s);
  if (!res)
    throw std::runtime_error(res.error().text);
  fd_ = *res;
  net::set_blocking(fd_, true);
}

raw_client raw_client::with_receive_buffer(uint16_t port, int bytes) {
  raw_client c;
  c.fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c.fd_ < 0)
    throw std::runtime_error("socket failed");
  ::setsockopt(c.fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    throw std::runtime_error("connect failed");
  return c;
}

raw_client raw_client::from_address(uint16_t port, const std::string& source) {
  raw_client c;
  c.fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c.fd_ < 0)
    throw std::runtime_error("socket failed");
  sockaddr_in from{};
  from.sin_family = AF_INET;
  if (::inet_pton(AF_INET, source.c_str(), &from.sin_addr) != 1
      || ::bind(c.fd_, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0)
    throw std::runtime_error("cannot bind to " + source);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    throw std::runtime_error("connect failed");
  int one = 1;
  ::setsockopt(c.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return c;
}

raw_client raw_client::adopt(int fd) {
  raw_client c;
  c.fd_ = fd;
  net::set_blocking(c.fd_, true);
  return c;
}

raw_client::~raw_client() {
  close();
}

raw_client::raw_client(raw_client&& other) noexcept {
  *this = std::move(other);
}

raw_client& raw_client::operator=(raw_client&& other) noexcept {
  close();
  fd_ = std::exchange(other.fd_, -1);
  splitter_ = std::move(other.splitter_);
  pending_ = std::move(other.pending_);
  eof_ = other.eof_;
  return *this;
}

void raw_client::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

bool raw_client::send_bytes(std::string_view bytes) {
  return net::write_all(fd_, bytes.data(), bytes.size());
}

bool raw_client::send_body(std::string_view body) {
  std::string framed(proto::header_size, '\0');
  proto::write_header(framed.data(), static_cast<uint32_t>(body.size()));
  framed.append(body);
  return send_bytes(framed);
}

bool raw_client::send(const v1::Frame& frame) {
  return send_bytes(proto::encode_frame(frame));
}

v1::Frame raw_client::hello(const std::string& name, std::vector<std::string> routes,
                            const std::string& resume_token) {
  v1::Frame f;
  auto h = f.mutable_hello();
  h->set_protocol_version(proto::protocol_version);
  h->set_agent_name(name);
  h->set_sdk_name("raw-test");
  h->set_resume_token(resume_token);
  for (auto& r : routes)
    h->add_routes(r);
  return handshake(f, 3s);
}

v1::Frame raw_client::login(const std::string& name, const std::string& identity,
                            const std::string& token, std::vector<std::string> routes) {
  v1::Frame f;
  auto h = f.mutable_hello();
  h->set_protocol_version(proto::protocol_version);
  h->set_agent_name(name);
  h->set_sdk_name("raw-test");
  h->set_identity(identity);
  h->set_token(token);
  for (auto& r : routes)
    h->add_routes(r);
  return handshake(f, 15s);
}

v1::Frame raw_client::handshake(const v1::Frame& hello, std::chrono::milliseconds timeout) {
  send(hello);
  for (;;) {
    auto r = read(timeout);
    if (!r)
      return {};
    if (r->has_welcome() || r->has_notice() || r->has_goodbye())
      return *r;
  }
}

bool raw_client::send_envelope(const std::string& to, const std::string& payload,
                               const std::string& route, uint64_t client_seq) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient(to);
  e->set_payload(payload);
  e->set_route(route);
  e->set_client_seq(client_seq);
  return send(f);
}

bool raw_client::fill(std::chrono::steady_clock::time_point deadline) {
  if (eof_ || fd_ < 0)
    return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
    deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0)
    return false;
  pollfd pfd{fd_, POLLIN, 0};
  if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
    return false;
  char buf[65536];
  auto n = ::recv(fd_, buf, sizeof(buf), 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  splitter_.append(buf, static_cast<size_t>(n));
  return true;
}

std::optional<std::string> raw_client::read_raw(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::string_view body;
    if (splitter_.next(body)) {
      std::string out(proto::header_size, '\0');
      proto::write_header(out.data(), static_cast<uint32_t>(body.size()));
      out.append(body);
      return out;
    }
    splitter_.compact();
    if (splitter_.error() != proto::frame_error::none || !fill(deadline))
      return std::nullopt;
  }
}

std::optional<v1::Frame> raw_client::read(std::chrono::milliseconds timeout) {
  if (!pending_.empty()) {
    auto f = std::move(pending_.front());
    pending_.erase(pending_.begin());
    return f;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::string_view body;
    if (splitter_.next(body)) {
      v1::Frame f;
      if (proto::decode_frame(body, f) != proto::frame_error::none)
        return std::nullopt;
      return f;
    }
    splitter_.compact();
    if (splitter_.error() != proto::frame_error::none || !fill(deadline))
      return std::nullopt;
  }
}

std::optional<v1::Frame> raw_client::read_kind(v1::Frame::KindCase kind,
                                               std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return std::nullopt;
    auto f = read(left);
    if (!f)
      return std::nullopt;
    if (f->kind_case() == kind)
      return f;
    if (f->has_heartbeat() && f->heartbeat().seq() != 0) {
      v1::Frame reply;
      reply.mutable_heartbeat()->set_reply_to(f->heartbeat().seq());
      send(reply);
    }
  }
}

std::optional<v1::Envelope> raw_client::read_envelope(std::chrono::milliseconds timeout) {
  auto d = read_delivery(timeout);
  if (!d)
    return std::nullopt;
  // The sender's envelope with the server's stamp put in (test convenience).
  auto e = d->envelope();
  e.set_message_id(d->message_id());
  e.set_sender(d->sender());
  e.set_relayed_unix_nanos(d->relayed_unix_nanos());
  return e;
}

std::optional<v1::Delivery> raw_client::read_delivery(std::chrono::milliseconds timeout) {
  auto f = read_kind(v1::Frame::kDelivery, timeout);
  if (!f)
    return std::nullopt;
  return f->delivery();
}

bool raw_client::wait_closed(std::chrono::milliseconds timeout, std::vector<v1::Frame>* before) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    auto f = read(left);
    if (f) {
      if (before)
        before->push_back(std::move(*f));
      continue;
    }
    if (eof_) {
      close(); // like a real client: hang up once the server has
      return true;
    }
  }
}

bool raw_client::ping(std::chrono::milliseconds timeout) {
  auto seq = next_ping_++ + 1'000'000;
  v1::Frame f;
  f.mutable_heartbeat()->set_seq(seq);
  if (!send(f))
    return false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<v1::Frame> others;
  bool ok = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    auto r = read(left);
    if (!r)
      break;
    if (r->has_heartbeat() && r->heartbeat().reply_to() == seq) {
      ok = true;
      break;
    }
    others.push_back(std::move(*r));
  }
  // Keep frames that arrived meanwhile for later reads.
  pending_.insert(pending_.begin(), others.begin(), others.end());
  return ok;
}

size_t rss_kib(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stoul(line.substr(6));
  return 0;
}

} // namespace convoke::test
