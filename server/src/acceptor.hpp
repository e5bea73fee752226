#pragma once

// Accepts TCP connections on a thread of its own and hands each socket to a
// callback (the listener broker). CAF-free.
//
// Why not CAF's doorman: when accept() fails with EMFILE/ENFILE (the
// descriptor limit), CAF 0.17 ignores the error and the listening socket
// stays readable, so its multiplexer spins at 100% CPU. This acceptor backs
// off instead (5 ms doubling to 1 s, as NATS and Go's net/http do), logs
// the condition at most every 10 s, and accepts again as soon as
// descriptors are free; meanwhile connections wait in the listen backlog.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

namespace spdlog {
class logger;
}

namespace convoke::server {

class acceptor {
public:
  /// Takes ownership of `listen_fd` (non-blocking, listening).
  acceptor(int listen_fd, std::shared_ptr<spdlog::logger> log,
           std::atomic<uint64_t>& accept_errors);
  ~acceptor();

  acceptor(const acceptor&) = delete;
  acceptor& operator=(const acceptor&) = delete;

  /// Starts the thread; `on_accept(fd)` runs on it for each connection and
  /// owns the descriptor (non-blocking, close-on-exec, TCP_NODELAY).
  void start(std::function<void(int fd)> on_accept);

  /// Stops accepting and closes the listening socket. Idempotent; no
  /// `on_accept` call runs after it returns.
  void stop();

private:
  void run();

  int listen_fd_;
  int wake_fd_;
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<uint64_t>& accept_errors_;
  std::function<void(int)> on_accept_;
  std::thread thread_;
};

} // namespace convoke::server
