#pragma once

// An in-process Convoke server on 127.0.0.1 and an ephemeral port, with
// test-friendly defaults (tracing off, logs at warn unless
// CONVOKE_TEST_LOG_LEVEL says otherwise).

#include <functional>
#include <stdexcept>

#include "convoke/server/server.hpp"

namespace convoke::test {

/// Configures logging for a test binary once.
void init_test_logging();

inline server::server_config test_config() {
  init_test_logging();
  server::server_config cfg;
  cfg.host = "127.0.0.1";
  cfg.port = 0;
  cfg.admin_port = 0; // the admin listener runs too, on a free port
  cfg.trace_enabled = false;
  cfg.drain_timeout = std::chrono::milliseconds{2000};
  return cfg;
}

class test_server {
public:
  explicit test_server(server::server_config cfg = test_config()) : srv_(std::move(cfg)) {
    if (auto ok = srv_.start(); !ok)
      throw std::runtime_error(ok.error().message());
  }

  explicit test_server(const std::function<void(server::server_config&)>& tweak)
    : test_server(tweaked(tweak)) {}

  uint16_t port() const noexcept {
    return srv_.port();
  }

  server::server& get() noexcept {
    return srv_;
  }

  server::server_stats stats() const {
    return srv_.stats();
  }

  void stop() {
    srv_.shutdown();
    srv_.wait();
  }

private:
  static server::server_config tweaked(const std::function<void(server::server_config&)>& f) {
    auto cfg = test_config();
    f(cfg);
    return cfg;
  }

  server::server srv_;
};

} // namespace convoke::test
