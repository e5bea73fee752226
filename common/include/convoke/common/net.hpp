#pragma once

/// @file
/// Plain POSIX TCP helpers (no CAF): connecting with a timeout and blocking
/// I/O for tools, tests and benchmarks.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>

#include "convoke/common/error.hpp"

namespace convoke::net {

/// The category of getaddrinfo() failures: the value is the EAI_* code
/// (negative on glibc) and the message is gai_strerror()'s. EAI_SYSTEM is
/// reported as the errno it stands for (system category) instead.
const std::error_category& resolver_category() noexcept;

/// The error code for a getaddrinfo() result `rc` != 0 (reads errno for
/// EAI_SYSTEM).
std::error_code resolver_error(int rc) noexcept;

/// Resolves `host` and connects with a non-blocking connect bounded by
/// `timeout`. The socket is non-blocking with TCP_NODELAY set; the caller
/// owns it. Errors: `resolver_category()` codes ("cannot resolve 'host':
/// ..."), the errno of socket()/connect() (e.g. `std::errc::connection_refused`,
/// "cannot connect to host:port: ..."), or `std::errc::timed_out`.
/// Blocks the calling thread (name resolution and the wait), so never call it
/// from an actor or the I/O thread.
expected<int> tcp_connect(const std::string& host, uint16_t port,
                          std::chrono::milliseconds timeout);

/// Switches a socket between blocking and non-blocking mode.
bool set_blocking(int fd, bool blocking);

/// Writes all bytes (blocking socket). False on error.
bool write_all(int fd, const void* data, size_t size);

/// Sets SO_RCVTIMEO on a blocking socket.
void set_receive_timeout(int fd, std::chrono::milliseconds timeout);

/// Checks that `host` resolves to an address to listen on. The error has a
/// `resolver_category()` code and says "cannot resolve: <reason>".
expected<> check_resolvable(const std::string& host);

/// A listening socket made by `tcp_listen`.
struct listening_socket {
  int fd = -1;
  uint16_t port = 0; // the bound port (useful with port 0)
};

/// Resolves `host`, binds host:port (SO_REUSEADDR) and listens with
/// `backlog`. The socket is non-blocking and close-on-exec; the caller owns
/// it. Errors: a `resolver_category()` code or the errno of the last
/// address tried (e.g. `std::errc::address_in_use`,
/// `std::errc::permission_denied`); the text reads "cannot listen on
/// host:port: Address already in use" (or "...: cannot resolve 'host': ...").
/// With `reuse_port`, SO_REUSEPORT is set before bind: several sockets (of
/// processes of the same user) that all set it may bind the same host:port,
/// and the kernel spreads new connections over them.
expected<listening_socket> tcp_listen(const std::string& host, uint16_t port, int backlog,
                                      bool reuse_port = false);

/// Sets the socket receive buffer size (SO_RCVBUF).
void set_receive_buffer(int fd, int bytes);

} // namespace convoke::net
