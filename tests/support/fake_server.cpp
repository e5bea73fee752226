#include "fake_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

#include "convoke/proto/codec.hpp"

namespace convoke::test {

fake_server::fake_server() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0)
    throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd_, 16) != 0
      || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("cannot listen on 127.0.0.1");
  port_ = ntohs(addr.sin_port);
}

fake_server::~fake_server() {
  close();
}

void fake_server::close() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
}

std::optional<raw_client> fake_server::accept(std::chrono::milliseconds timeout) {
  if (fd_ < 0)
    return std::nullopt;
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
    return std::nullopt;
  int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (c < 0)
    return std::nullopt;
  return raw_client::adopt(c);
}

v1::Frame fake_server::welcome(const std::string& agent_name, uint64_t session_id,
                               const std::string& resume_token) {
  v1::Frame f;
  auto& w = *f.mutable_welcome();
  w.set_protocol_version(proto::protocol_version);
  w.set_session_id(session_id);
  w.set_agent_name(agent_name);
  w.set_server_name("fake");
  w.set_server_version("0");
  w.mutable_limits()->set_max_frame_bytes(1 << 20);
  w.mutable_limits()->set_max_delivery_bytes(1 << 20);
  w.set_resume_token(resume_token);
  return f;
}

v1::Frame fake_server::goodbye(const std::string& code, const std::string& reason,
                               std::vector<std::string> reconnect_to, uint64_t reconnect_after_ms) {
  v1::Frame f;
  auto& g = *f.mutable_goodbye();
  g.set_code(code);
  g.set_reason(reason);
  g.set_reconnect_after_ms(reconnect_after_ms);
  for (auto& a : reconnect_to)
    g.add_reconnect_to(std::move(a));
  return f;
}

} // namespace convoke::test
