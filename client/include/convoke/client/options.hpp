#pragma once

/// @file
/// Connection options of an agent.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace convoke {

/// Reconnection with exponential backoff and jitter.
struct reconnect_policy {
  /// Try again after a lost connection or a failed connect.
  bool enabled = true;
  /// First delay; each further attempt multiplies it by `multiplier`, up to
  /// `max_delay`. The attempt counter resets after a successful session.
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{5000};
  double multiplier = 2.0;
  /// Each delay is randomized by +/- this fraction (0.2 = 20%).
  double jitter = 0.2;
  /// Give up after this many consecutive failures (0 = never).
  int max_attempts = 0;
};

struct client_options {
  std::string host = "127.0.0.1";
  uint16_t port = 7420;
  /// Role label shown in server logs and traces.
  std::string role;
  /// Identity to authenticate as, when the server has a credentials file;
  /// empty means the identity named like the agent.
  std::string identity;
  /// The identity's token, or the server's shared secret. Programs should
  /// read it from a file or the environment (`read_token`), never argv.
  std::string token;
  /// Bound on the TCP connect and on the wait for Welcome.
  std::chrono::milliseconds connect_timeout{5000};
  reconnect_policy reconnect;
  /// Outgoing bytes that may wait for the socket before sends fail with
  /// `errc::send_buffer_full`.
  uint64_t max_pending_bytes = 8ull << 20;
  /// Received bytes that may wait for the agent before the SDK stops reading
  /// (TCP backpressure towards the server).
  uint64_t max_inbound_bytes = 4ull << 20;
  /// Time allowed on stop for teardown's messages and Goodbye to leave.
  std::chrono::milliseconds stop_timeout{2000};

  // TLS (set by a tls:// address): the connection is encrypted and the
  // server's certificate verified, host name included (always).
  bool tls = false;
  /// PEM CA certificates the server's certificate must chain to; empty:
  /// the system's trust store.
  std::string tls_ca_file;
  /// PEM client certificate and its key, for servers that ask for one
  /// (mutual TLS); both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// The name the server's certificate must carry (DNS name or IP
  /// address); empty: `host`. Also sent as SNI when it is a DNS name.
  std::string tls_server_name;
};

/// Reads a token: the first line of `file` if given, else the environment
/// variable `env_var`; "" if neither is set. Throws std::runtime_error if the
/// file cannot be read or is empty (a token file that is not there is an
/// error, not "no token").
std::string read_token(const std::string& file, const char* env_var = "CONVOKE_TOKEN");

/// Parses "host:port" (also ":port", "port", "[v6]:port"), optionally with
/// a scheme: "tls://host:port" turns TLS on, "tcp://host:port" or none
/// leaves the connection plaintext. Returns false for a malformed address
/// or an unknown scheme.
bool set_server_address(client_options& opts, const std::string& address);

} // namespace convoke
