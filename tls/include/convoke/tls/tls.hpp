#pragma once

/// @file
/// TLS for Convoke's own sockets, without CAF: OpenSSL over memory BIOs.
///
/// CAF 0.17's openssl module secures only CAF's own remoting, so the
/// server's sessions and the SDK's connection encrypt through a `channel`:
/// ciphertext read from the socket is fed in and plaintext comes out;
/// plaintext to send goes in and ciphertext for the socket comes out. The
/// channel never touches a socket, so the brokers keep their own I/O paths
/// (direct writes, CAF's buffer, the output ledger) and unit tests pump two
/// channels into each other in memory.
///
/// A `context` holds the certificates and the verification settings (an
/// OpenSSL `SSL_CTX`, TLS 1.2 minimum). It is immutable once made, so one
/// context is shared by every channel made from it; the server swaps in a
/// new one on reload (SIGHUP) and channels keep the one they started with.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "convoke/common/error.hpp"

namespace convoke::tls {

enum class errc : uint8_t {
  /// A certificate, key or CA file cannot be loaded, or does not fit.
  bad_file = 1,
  /// The peer's certificate failed verification (untrusted, expired,
  /// wrong host name, missing when required).
  verify_failed,
  /// The handshake failed otherwise (no common version or cipher, an
  /// alert from the peer, bytes that are not TLS).
  handshake_failed,
  /// A TLS error after the handshake (a corrupt record, an alert).
  protocol_error,
};

/// The "convoke.tls" error category.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Whether the server asks clients for a certificate.
enum class client_verification : uint8_t {
  /// No client certificates.
  off,
  /// Asked for; one that is sent must verify against the client CA.
  optional,
  /// Required: a client without a valid certificate is refused.
  require,
};

/// "off", "optional", "require".
std::string_view to_string(client_verification v) noexcept;

struct server_settings {
  /// PEM: the server's certificate followed by its chain.
  std::string cert_file;
  /// PEM: the private key of `cert_file`.
  std::string key_file;
  /// PEM: CA certificates client certificates must chain to (needed unless
  /// `verify` is off).
  std::string client_ca_file;
  client_verification verify = client_verification::off;
};

struct client_settings {
  /// PEM: CA certificates the server's must chain to. Empty: the system's
  /// default trust store.
  std::string ca_file;
  /// PEM: an optional client certificate (mutual TLS) and its key.
  std::string cert_file;
  std::string key_file;
  /// The name the server's certificate must carry (DNS name or IP address,
  /// checked against its subjectAltName), also sent as SNI when it is a DNS
  /// name. Never empty for a client channel: hostname verification is
  /// always on.
  std::string server_name;
};

class context {
public:
  /// A server context; `errc::bad_file` names the file and OpenSSL's reason.
  static expected<std::shared_ptr<const context>> server(const server_settings& s);
  /// A client context; `errc::bad_file` names the file and OpenSSL's reason.
  static expected<std::shared_ptr<const context>> client(const client_settings& s);

  ~context();
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  bool is_server() const noexcept {
    return server_;
  }

  /// For logs: the own certificate's subject, SHA-256 fingerprint prefix
  /// and expiry ("subject=CN=localhost sha256=3f1a... not_after=...").
  const std::string& description() const noexcept {
    return description_;
  }

  /// The OpenSSL context (`SSL_CTX*`); for channel only.
  void* native() const noexcept {
    return ctx_;
  }

  const std::string& server_name() const noexcept {
    return server_name_;
  }

private:
  context() = default;
  void* ctx_ = nullptr;
  bool server_ = false;
  std::string server_name_;
  std::string description_;
};

using context_ptr = std::shared_ptr<const context>;

/// Checks that the certificate (chain) in `cert_file` verifies against the
/// CA certificates in `ca_file` as both a TLS server and a TLS client
/// certificate, now: what a peer that trusts `ca_file` checks of it
/// (`errc::verify_failed` with OpenSSL's reason; `errc::bad_file` if a file
/// cannot be read).
expected<> verify_as_peer(const std::string& cert_file, const std::string& ca_file);

/// True if `first` can start a TLS connection: a handshake record (22).
/// Anything else sent to a TLS port is plaintext (or garbage).
constexpr bool starts_handshake(unsigned char first) noexcept {
  return first == 0x16;
}

/// One TLS connection over memory buffers. Not thread-safe (each lives in
/// one broker).
class channel {
public:
  explicit channel(context_ptr ctx);
  ~channel();
  channel(const channel&) = delete;
  channel& operator=(const channel&) = delete;

  /// Takes ciphertext received from the peer and appends the plaintext it
  /// yields to `plain`; handshake records may produce output (see
  /// `take_output`). On a TLS failure: `errc::verify_failed`,
  /// `errc::handshake_failed` or `errc::protocol_error`, with a precise text
  /// ("certificate verify failed: certificate has expired"); the channel is
  /// then dead, but `take_output` may still hold an alert for the peer.
  expected<> feed(const char* data, size_t size, std::vector<char>& plain);

  /// Encrypts `size` bytes of plaintext. Before the handshake is done they
  /// wait in the channel and are encrypted once it is. Nothing is encrypted
  /// after `close` or a failure (the bytes are discarded).
  void write(const char* data, size_t size);

  /// Moves the ciphertext waiting to be sent to the end of `out`; returns
  /// how many bytes were added.
  size_t take_output(std::vector<char>& out);

  /// True if ciphertext is waiting to be sent.
  bool has_output() const noexcept;

  /// Client side: starts the handshake (the ClientHello is then output).
  void start();

  /// Sends close_notify (once); no plaintext is accepted afterwards.
  /// Plaintext still waiting for the handshake is discarded.
  void close();

  bool handshake_done() const noexcept {
    return handshake_done_;
  }

  /// The peer sent close_notify.
  bool peer_closed() const noexcept {
    return peer_closed_;
  }

  /// True once something failed (feed returned an error).
  bool failed() const noexcept {
    return failed_;
  }

  /// The verified peer certificate's name, once the handshake is done: its
  /// subject CN, or else its first DNS subjectAltName; empty without a
  /// (verified) peer certificate.
  const std::string& peer_name() const noexcept {
    return peer_name_;
  }

  /// Protocol version and cipher, for logs ("TLSv1.3 TLS_AES_256_GCM_SHA384").
  std::string description() const;

  /// Plaintext bytes waiting for the handshake (counted in server budgets).
  size_t buffered() const noexcept {
    return early_.size();
  }

private:
  expected<> drive();
  expected<> failure(int ret, bool handshaking);
  void encrypt(const char* data, size_t size);

  context_ptr ctx_;
  void* ssl_ = nullptr;
  void* in_ = nullptr;  // BIO: ciphertext from the peer, read by OpenSSL
  void* out_ = nullptr; // BIO: ciphertext for the peer, written by OpenSSL
  std::vector<char> early_;
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool closed_ = false;
  bool failed_ = false;
  std::string peer_name_;
};

} // namespace convoke::tls

template <>
struct std::is_error_code_enum<convoke::tls::errc> : std::true_type {};
