#include "acceptor.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <spdlog/logger.h>

namespace convoke::server {

namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds min_backoff{5};
constexpr milliseconds max_backoff{1000};
constexpr auto log_every = std::chrono::seconds{10};
/// Connections taken per wakeup before polling again.
constexpr int accepts_per_round = 64;

/// Errors that mean "out of a resource, try again later" (accept(2)).
bool resource_error(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

std::string limit_text(int err) {
  if (err != EMFILE)
    return {};
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return {};
  return " (RLIMIT_NOFILE is " + std::to_string(rl.rlim_cur) + ")";
}

/// Lower-case error text for log lines ("too many open files").
std::string error_text(int err) {
  std::string s = std::strerror(err);
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

} // namespace

acceptor::acceptor(int listen_fd, std::shared_ptr<spdlog::logger> log,
                   std::atomic<uint64_t>& accept_errors)
  : listen_fd_(listen_fd), wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), log_(std::move(log)),
    accept_errors_(accept_errors) {
  if (wake_fd_ < 0)
    throw std::runtime_error(std::string{"eventfd: "} + std::strerror(errno));
}

acceptor::~acceptor() {
  stop();
  if (wake_fd_ >= 0)
    close(wake_fd_);
}

void acceptor::start(std::function<void(int)> on_accept) {
  on_accept_ = std::move(on_accept);
  thread_ = std::thread{[this] { run(); }};
}

void acceptor::stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
  }
}

void acceptor::run() {
  auto backoff = milliseconds{0};
  uint64_t failures = 0;
  steady::time_point failing_since;
  steady::time_point last_log;
  for (;;) {
    // While backing off, only the wake-up descriptor is watched.
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    auto nfds = backoff.count() > 0 ? 1 : 2;
    auto rc = poll(fds, static_cast<nfds_t>(nfds),
                   backoff.count() > 0 ? static_cast<int>(backoff.count()) : -1);
    if (rc < 0 && errno != EINTR) {
      log_->critical("accept loop failed poll_error={}", error_text(errno));
      return;
    }
    if (fds[0].revents != 0)
      return; // stop()
    for (int i = 0; i < accepts_per_round; ++i) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        if (failures > 0) {
          auto secs = std::chrono::duration<double>(steady::now() - failing_since).count();
          log_->info("accepting connections again failures={} after_s={:.1f}", failures, secs);
          failures = 0;
        }
        backoff = milliseconds{0};
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        on_accept_(fd);
        continue;
      }
      auto err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK)
        break;
      if (!resource_error(err))
        continue; // ECONNABORTED, EPROTO, ...: that connection is gone; next
      accept_errors_.fetch_add(1, std::memory_order_relaxed);
      auto now = steady::now();
      if (failures++ == 0) {
        failing_since = now;
        last_log = now;
        log_->error("cannot accept connections: {}{}; backing off, pending connections wait "
                    "in the listen backlog",
                    error_text(err), limit_text(err));
      } else if (now - last_log >= log_every) {
        last_log = now;
        log_->error("still cannot accept connections: {}{} failures={}", error_text(err),
                    limit_text(err), failures);
      }
      backoff = backoff.count() == 0 ? min_backoff : std::min(backoff * 2, max_backoff);
      break;
    }
  }
}

} // namespace convoke::server
