#pragma once

/// @file
/// Plain POSIX TCP helpers (no CAF): connecting with a timeout and blocking
/// I/O for tools, tests and benchmarks.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace convoke::net {

/// Result of `tcp_connect`: a socket or an error text.
struct connect_result {
  int fd = -1;
  std::string error;
  explicit operator bool() const noexcept {
    return fd >= 0;
  }
};

/// Resolves `host` and connects with a non-blocking connect bounded by
/// `timeout`. The returned socket is non-blocking with TCP_NODELAY set.
/// Blocks the calling thread (name resolution and the wait), so never call it
/// from an actor or the I/O thread.
connect_result tcp_connect(const std::string& host, uint16_t port,
                           std::chrono::milliseconds timeout);

/// Switches a socket between blocking and non-blocking mode.
bool set_blocking(int fd, bool blocking);

/// Writes all bytes (blocking socket). False on error.
bool write_all(int fd, const void* data, size_t size);

/// Sets SO_RCVTIMEO on a blocking socket.
void set_receive_timeout(int fd, std::chrono::milliseconds timeout);

/// Tries to bind a TCP socket to host:port (then closes it) and returns why
/// that fails, e.g. "Address already in use"; empty if it would work. Used
/// to turn a library's generic bind failure into a precise message.
std::string bind_error(const std::string& host, uint16_t port);

/// Why `host` does not resolve to an address to listen on, or "".
std::string resolve_error(const std::string& host);

/// Result of `tcp_listen`: a listening socket or an error text.
struct listen_result {
  int fd = -1;
  uint16_t port = 0; // the bound port (useful with port 0)
  std::string error;
  explicit operator bool() const noexcept {
    return fd >= 0;
  }
};

/// Resolves `host`, binds host:port (SO_REUSEADDR) and listens with
/// `backlog`. The socket is non-blocking and close-on-exec.
listen_result tcp_listen(const std::string& host, uint16_t port, int backlog);

/// Sets the socket receive buffer size (SO_RCVBUF).
void set_receive_buffer(int fd, int bytes);

} // namespace convoke::net
