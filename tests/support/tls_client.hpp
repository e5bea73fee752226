#pragma once

// A blocking TLS protocol client for tests: a real socket and OpenSSL's own
// socket BIO (SSL_set_fd), independent of convoke::tls, so the server's TLS
// is checked against an implementation it does not share code with.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "convoke/proto/codec.hpp"

namespace convoke::test {

using namespace std::chrono_literals;

struct tls_client_options {
  std::string ca;   // CA file the server must chain to
  std::string cert; // optional client certificate and key
  std::string key;
  std::string server_name = "localhost"; // verified and sent as SNI
};

class tls_client {
public:
  /// Connects to 127.0.0.1:port and runs the handshake (bounded by
  /// `timeout`). Check `ok()`; `error()` says why it failed.
  tls_client(uint16_t port, const tls_client_options& opts, std::chrono::milliseconds timeout = 3s);
  ~tls_client();
  tls_client(const tls_client&) = delete;
  tls_client& operator=(const tls_client&) = delete;

  /// The handshake completed (from this side) and nothing failed since.
  bool ok() const noexcept {
    return ok_;
  }
  /// OpenSSL's reasons and the verify result of the last failure.
  const std::string& error() const noexcept {
    return error_;
  }
  int fd() const noexcept {
    return fd_;
  }

  bool send(const v1::Frame& frame);
  /// Sends plaintext bytes as they are (e.g. many encoded frames at once).
  bool send_bytes(std::string_view bytes);
  /// Sends Hello and returns the server's answer (Welcome or Notice);
  /// nullopt if nothing came (see error()).
  std::optional<v1::Frame> hello(const std::string& name, std::vector<std::string> routes = {});
  bool send_envelope(const std::string& to, const std::string& payload,
                     const std::string& route = {});
  /// The next frame; nullopt on timeout, close or a TLS error.
  std::optional<v1::Frame> read(std::chrono::milliseconds timeout = 3s);
  /// The next frame of `kind` (others are skipped, heartbeats answered).
  std::optional<v1::Frame> read_kind(v1::Frame::KindCase kind,
                                     std::chrono::milliseconds timeout = 3s);
  /// True if the server ends the connection within `timeout` (close_notify
  /// or EOF); frames before go to `before`.
  bool wait_closed(std::chrono::milliseconds timeout, std::vector<v1::Frame>* before = nullptr);
  /// The server sent close_notify (a clean TLS close).
  bool got_close_notify() const noexcept {
    return close_notify_;
  }

private:
  /// Reads more plaintext into the splitter; false on timeout/close/error.
  bool fill(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  void* ctx_ = nullptr;
  void* ssl_ = nullptr;
  bool ok_ = false;
  bool eof_ = false;
  bool close_notify_ = false;
  std::string error_;
  proto::frame_splitter splitter_;
};

} // namespace convoke::test
