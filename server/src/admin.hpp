#pragma once

// The admin HTTP listener (docs/operations.md): /healthz, /readyz, /varz,
// /connz, /routez, /metrics, served by cpp-httplib on threads of its own.
// It reads the server's atomics and the session registry; it never sends
// the relay an actor message, so scraping cannot slow relaying down beyond
// the CPU its threads take. CAF-free.

#include <chrono>
#include <cstdint>
#include <memory>

#include "context.hpp"
#include "convoke/common/error.hpp"

namespace convoke::server {

class admin_server {
public:
  /// Binds cfg.admin_host:cfg.admin_port and starts serving. Errors:
  /// `errc::bind_failed` ("cannot listen on host:port for the admin
  /// endpoints: Address already in use"), `errc::invalid_value` (TLS files).
  static expected<std::unique_ptr<admin_server>> start(context_ptr ctx, uint16_t relay_port);

  /// Stops accepting, finishes the requests in progress, joins its threads.
  ~admin_server();

  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;

  uint16_t port() const noexcept;

  struct impl;

private:
  explicit admin_server(std::unique_ptr<impl> d);
  std::unique_ptr<impl> impl_;
};

} // namespace convoke::server
