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

// Connects one address; returns the fd or -1 with `err` set.
int connect_one(const addrinfo* ai, std::chrono::milliseconds timeout, std::string& err) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    err = std::string{"socket: "} + std::strerror(errno);
    return -1;
  }
  set_blocking(fd, false);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
    return fd;
  if (errno != EINPROGRESS) {
    err = std::strerror(errno);
    close(fd);
    return -1;
  }
  pollfd pfd{fd, POLLOUT, 0};
  int rc;
  do {
    rc = poll(&pfd, 1, static_cast<int>(timeout.count()));
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) {
    err = "timed out after " + std::to_string(timeout.count()) + " ms";
    close(fd);
    return -1;
  }
  int so_error = 0;
  socklen_t len = sizeof(so_error);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (rc < 0 || so_error != 0) {
    err = std::strerror(rc < 0 ? errno : so_error);
    close(fd);
    return -1;
  }
  return fd;
}

} // namespace

connect_result tcp_connect(const std::string& host, uint16_t port,
                           std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  auto port_str = std::to_string(port);
  if (auto rc = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res); rc != 0)
    return {-1, "cannot resolve '" + host + "': " + gai_strerror(rc)};
  std::string err = "no address";
  int fd = -1;
  for (auto ai = res; ai != nullptr && fd < 0; ai = ai->ai_next)
    fd = connect_one(ai, timeout, err);
  freeaddrinfo(res);
  if (fd < 0)
    return {-1, "cannot connect to " + host + ":" + port_str + ": " + err};
  return {fd, {}};
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

std::string bind_error(const std::string& host, uint16_t port) {
  addrinfo* res = nullptr;
  if (auto rc = resolve_passive(host, port, &res); rc != 0)
    return std::string{"cannot resolve '"} + host + "': " + gai_strerror(rc);
  std::string err = "no usable address";
  for (auto ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    auto rc = ::bind(fd, ai->ai_addr, ai->ai_addrlen);
    err = rc == 0 ? std::string{} : std::strerror(errno);
    close(fd);
    if (rc == 0)
      break;
  }
  freeaddrinfo(res);
  return err;
}

std::string resolve_error(const std::string& host) {
  addrinfo* res = nullptr;
  if (auto rc = resolve_passive(host, 0, &res); rc != 0)
    return std::string{"cannot resolve: "} + gai_strerror(rc);
  freeaddrinfo(res);
  return {};
}

listen_result tcp_listen(const std::string& host, uint16_t port, int backlog) {
  listen_result out;
  addrinfo* res = nullptr;
  if (auto rc = resolve_passive(host, port, &res); rc != 0) {
    out.error = std::string{"cannot resolve '"} + host + "': " + gai_strerror(rc);
    return out;
  }
  out.error = "no usable address";
  for (auto ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      out.error = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, backlog) != 0) {
      out.error = std::strerror(errno);
      close(fd);
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    out.port = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    out.fd = fd;
    out.error.clear();
    break;
  }
  freeaddrinfo(res);
  return out;
}

void set_receive_buffer(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

} // namespace convoke::net
