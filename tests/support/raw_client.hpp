#pragma once

// A blocking, CAF-free protocol client for tests: real sockets, our codec,
// no SDK. Lets tests send exactly the bytes they want (garbage included).

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "convoke/proto/codec.hpp"

namespace convoke::test {

using namespace std::chrono_literals;

class raw_client {
public:
  raw_client() = default;
  explicit raw_client(uint16_t port, const std::string& host = "127.0.0.1");

  /// Connects to 127.0.0.1:port with SO_RCVBUF set *before* connecting, so
  /// that the TCP window really is that small (a client that reads slowly).
  static raw_client with_receive_buffer(uint16_t port, int bytes);

  /// Connects to 127.0.0.1:port from `source` (another loopback address,
  /// e.g. "127.0.0.2"): the server sees another peer address.
  static raw_client from_address(uint16_t port, const std::string& source);
  /// Takes over a connected socket, e.g. one a fake server accepted: the
  /// frame helpers then speak for the server's side.
  static raw_client adopt(int fd);
  ~raw_client();
  raw_client(raw_client&& other) noexcept;
  raw_client& operator=(raw_client&& other) noexcept;

  bool connected() const noexcept {
    return fd_ >= 0;
  }
  int fd() const noexcept {
    return fd_;
  }

  bool send_bytes(std::string_view bytes);
  bool send(const v1::Frame& frame);
  /// Sends `body` (raw frame bytes, possibly hand-made) with a length prefix.
  bool send_body(std::string_view body);

  /// Sends Hello and returns the server's answer (Welcome, or Notice).
  v1::Frame hello(const std::string& name, std::vector<std::string> routes = {},
                  const std::string& resume_token = {});

  /// Sends Hello as `identity` (empty: the identity named like the agent)
  /// with `token`, and returns the answer; waits longer than hello(), since
  /// a token check takes an argon2id hash (slow under sanitizers).
  v1::Frame login(const std::string& name, const std::string& identity, const std::string& token,
                  std::vector<std::string> routes = {});

  /// Sends an envelope (broadcast when `to` is empty).
  bool send_envelope(const std::string& to, const std::string& payload,
                     const std::string& route = {}, uint64_t client_seq = 0);

  /// The next frame exactly as it came (length prefix included), unparsed.
  std::optional<std::string> read_raw(std::chrono::milliseconds timeout = 2s);

  /// Reads the next frame; nullopt on timeout, close or framing error.
  std::optional<v1::Frame> read(std::chrono::milliseconds timeout = 2s);

  /// Reads frames until one of kind `kind` arrives (skipping others, e.g.
  /// heartbeats); nullopt on timeout/close.
  std::optional<v1::Frame> read_kind(v1::Frame::KindCase kind,
                                     std::chrono::milliseconds timeout = 2s);

  /// Reads the next Delivery, answering and skipping heartbeats.
  std::optional<v1::Delivery> read_delivery(std::chrono::milliseconds timeout = 2s);

  /// Reads the next Delivery and returns its envelope with the server's
  /// stamp (message_id, sender, relayed_unix_nanos) copied in.
  std::optional<v1::Envelope> read_envelope(std::chrono::milliseconds timeout = 2s);

  /// True if the server closes the connection within `timeout` (frames
  /// before the close are collected in `before`).
  bool wait_closed(std::chrono::milliseconds timeout, std::vector<v1::Frame>* before = nullptr);

  /// Round trip through the server (Heartbeat with seq): everything this
  /// client sent before has been processed by its session when it returns.
  bool ping(std::chrono::milliseconds timeout = 2s);

  void close();

private:
  /// Sends `hello` and returns the first Welcome, Notice or Goodbye.
  v1::Frame handshake(const v1::Frame& hello, std::chrono::milliseconds timeout);
  bool fill(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  proto::frame_splitter splitter_;
  std::vector<v1::Frame> pending_;
  uint64_t next_ping_ = 1;
  bool eof_ = false;
};

/// Resident set size of a process in KiB (from /proc), 0 if unknown.
size_t rss_kib(int pid);

} // namespace convoke::test
