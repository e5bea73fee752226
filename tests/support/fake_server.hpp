#pragma once

// A stand-in Convoke server for SDK tests: a real listening socket on
// 127.0.0.1 and an ephemeral port. The test accepts each connection and
// speaks the server's side itself, frame by frame (raw_client's helpers
// work both ways), to send what no real server sends yet, or may never
// send (a hostile Goodbye).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "raw_client.hpp"

namespace convoke::test {

class fake_server {
public:
  fake_server();
  ~fake_server();

  fake_server(const fake_server&) = delete;
  fake_server& operator=(const fake_server&) = delete;

  uint16_t port() const noexcept {
    return port_;
  }

  /// "127.0.0.1:port".
  std::string address() const {
    return "127.0.0.1:" + std::to_string(port_);
  }

  /// The next connection; nullopt if none comes within `timeout`.
  std::optional<raw_client> accept(std::chrono::milliseconds timeout = std::chrono::seconds{5});

  /// Stops listening: later connects are refused.
  void close();

  /// A Welcome as a server would send it (protocol 2, no heartbeats).
  static v1::Frame welcome(const std::string& agent_name, uint64_t session_id,
                           const std::string& resume_token);

  /// A Goodbye (server -> client).
  static v1::Frame goodbye(const std::string& code, const std::string& reason,
                           std::vector<std::string> reconnect_to = {},
                           uint64_t reconnect_after_ms = 0);

private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

} // namespace convoke::test
