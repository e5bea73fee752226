#include "convoke/common/net.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace convoke::net {

bool set_blocking(int fd, bool blocking) {
  auto flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0)
    return false;
  flags = blocking ? (flags & ~O_NONBLOCK) : (flags | O_NONBLOCK);
  return fcntl(fd, F_SETFL, flags) == 0;
}

namespace {

class resolver_category_impl final : public std::error_category {
public:
  const char* name() const noexcept override {
    return "getaddrinfo";
  }
  std::string message(int code) const override {
    return gai_strerror(code);
  }
};

std::error_code errno_code(int err) noexcept {
  return {err, std::system_category()};
}

// Connects one address; returns the socket or why it failed (errno or
// timed_out, with the reason as text).
expected<int> connect_one(const addrinfo* ai, std::chrono::milliseconds timeout) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    auto err = errno;
    return fail(errno_code(err), std::string{"socket: "} + std::strerror(err));
  }
  set_blocking(fd, false);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
    return fd;
  if (auto err = errno; err != EINPROGRESS) {
    close(fd);
    return fail(errno_code(err), std::strerror(err));
  }
  pollfd pfd{fd, POLLOUT, 0};
  int rc;
  do {
    rc = poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) {
    close(fd);
    return fail(std::errc::timed_out, "timed out after " + std::to_string(timeout.count()) + " ms");
  }
  int so_error = 0;
  socklen_t len = sizeof(so_error);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (rc < 0 || so_error != 0) {
    auto err = rc < 0 ? errno : so_error;
    close(fd);
    return fail(errno_code(err), std::strerror(err));
  }
  return fd;
}

} // namespace

const std::error_category& resolver_category() noexcept {
  static const resolver_category_impl instance;
  return instance;
}

std::error_code resolver_error(int rc) noexcept {
  if (rc == EAI_SYSTEM && errno != 0)
    return errno_code(errno);
  return {rc, resolver_category()};
}

expected<int> tcp_connect(const std::string& host, uint16_t port,
                          std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  auto port_str = std::to_string(port);
  if (auto rc = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res); rc != 0)
    return fail(resolver_error(rc), "cannot resolve '" + host + "': " + gai_strerror(rc));
  expected<int> fd = fail(std::errc::address_not_available, "no address"); // getaddrinfo gave none
  for (auto ai = res; ai != nullptr && !fd; ai = ai->ai_next)
    fd = connect_one(ai, timeout);
  freeaddrinfo(res);
  if (!fd)
    return fail(fd.error().code,
                "cannot connect to " + host + ":" + port_str + ": " + fd.error().text);
  return fd;
}

bool write_all(int fd, const void* data, size_t size) {
  auto p = static_cast<const char*>(data);
  while (size > 0) {
    auto n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void set_receive_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

namespace {

/// getaddrinfo() for a listening TCP socket (any family); 0 or an EAI_ code.
int resolve_passive(const std::string& host, uint16_t port, addrinfo** res) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  return getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, res);
}

} // namespace

expected<> check_resolvable(const std::string& host) {
  addrinfo* res = nullptr;
  if (auto rc = resolve_passive(host, 0, &res); rc != 0)
    return fail(resolver_error(rc), std::string{"cannot resolve: "} + gai_strerror(rc));
  freeaddrinfo(res);
  return {};
}

expected<listening_socket> tcp_listen(const std::string& host, uint16_t port, int backlog,
                                      bool reuse_port) {
  auto where = "cannot listen on " + host + ":" + std::to_string(port) + ": ";
  addrinfo* res = nullptr;
  if (auto rc = resolve_passive(host, port, &res); rc != 0)
    return fail(resolver_error(rc), where + "cannot resolve '" + host + "': " + gai_strerror(rc));
  // getaddrinfo gives at least one address; this is what an empty list says.
  std::error_code code = std::make_error_code(std::errc::address_not_available);
  std::string reason = "no usable address";
  for (auto ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      code = errno_code(errno);
      reason = std::strerror(code.value());
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
      code = errno_code(errno);
      reason = std::string{"SO_REUSEPORT: "} + std::strerror(code.value());
      close(fd);
      continue;
    }
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, backlog) != 0) {
      code = errno_code(errno);
      reason = std::strerror(code.value());
      close(fd);
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    auto bound
      = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    freeaddrinfo(res);
    return listening_socket{fd, bound};
  }
  freeaddrinfo(res);
  return fail(code, where + reason);
}

void set_receive_buffer(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

} // namespace convoke::net
