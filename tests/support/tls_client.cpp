#include "tls_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "convoke/common/net.hpp"

namespace convoke::test {

namespace {

using steady = std::chrono::steady_clock;

SSL* as_ssl(void* p) {
  return static_cast<SSL*>(p);
}

std::string reasons(SSL* ssl) {
  std::string out;
  while (auto e = ERR_get_error()) {
    auto r = ERR_reason_error_string(e);
    if (!out.empty())
      out += "; ";
    out += r != nullptr ? r : "unknown";
  }
  if (ssl != nullptr) {
    if (auto v = SSL_get_verify_result(ssl); v != X509_V_OK)
      out += std::string{out.empty() ? "" : "; "} + "verify: " + X509_verify_cert_error_string(v);
  }
  return out.empty() ? std::string{"connection closed"} : out;
}

/// Waits for the socket as OpenSSL asks; false when the deadline passed.
bool wait_for(int fd, int ssl_error, steady::time_point deadline) {
  auto left
    = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
  if (left <= 0)
    return false;
  pollfd p{fd, static_cast<short>(ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
  return ::poll(&p, 1, static_cast<int>(left)) > 0;
}

} // namespace

tls_client::tls_client(uint16_t port, const tls_client_options& opts,
                       std::chrono::milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  auto sock = net::tcp_connect("127.0.0.1", port, timeout);
  if (!sock) {
    error_ = sock.error().text;
    return;
  }
  fd_ = *sock;
  net::set_blocking(fd_, false);
  auto ctx = SSL_CTX_new(TLS_client_method());
  ctx_ = ctx;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx, opts.ca.c_str(), nullptr) != 1
      || (!opts.cert.empty()
          && (SSL_CTX_use_certificate_chain_file(ctx, opts.cert.c_str()) != 1
              || SSL_CTX_use_PrivateKey_file(ctx, opts.key.c_str(), SSL_FILETYPE_PEM) != 1))) {
    error_ = "cannot load test certificates: " + reasons(nullptr);
    return;
  }
  auto ssl = SSL_new(ctx);
  ssl_ = ssl;
  SSL_set_fd(ssl, fd_);
  SSL_set_tlsext_host_name(ssl, opts.server_name.c_str());
  SSL_set1_host(ssl, opts.server_name.c_str());
  for (;;) {
    ERR_clear_error();
    auto r = SSL_connect(ssl);
    if (r == 1)
      break;
    auto e = SSL_get_error(ssl, r);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && wait_for(fd_, e, deadline))
      continue;
    error_ = e == SSL_ERROR_WANT_READ ? "handshake timed out" : reasons(ssl);
    return;
  }
  ok_ = true;
}

tls_client::~tls_client() {
  if (ssl_ != nullptr)
    SSL_free(as_ssl(ssl_));
  if (ctx_ != nullptr)
    SSL_CTX_free(static_cast<SSL_CTX*>(ctx_));
  if (fd_ >= 0)
    ::close(fd_);
}

bool tls_client::send(const v1::Frame& frame) {
  return send_bytes(proto::encode_frame(frame));
}

bool tls_client::send_bytes(std::string_view bytes) {
  if (!ok_)
    return false;
  auto deadline = steady::now() + 3s;
  size_t at = 0;
  while (at < bytes.size()) {
    ERR_clear_error();
    auto n = SSL_write(as_ssl(ssl_), bytes.data() + at, static_cast<int>(bytes.size() - at));
    if (n > 0) {
      at += static_cast<size_t>(n);
      continue;
    }
    auto e = SSL_get_error(as_ssl(ssl_), n);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && wait_for(fd_, e, deadline))
      continue;
    error_ = reasons(as_ssl(ssl_));
    ok_ = false;
    return false;
  }
  return true;
}

std::optional<v1::Frame> tls_client::hello(const std::string& name,
                                           std::vector<std::string> routes) {
  v1::Frame f;
  auto h = f.mutable_hello();
  h->set_protocol_version(proto::protocol_version);
  h->set_agent_name(name);
  for (auto& r : routes)
    h->add_routes(r);
  if (!send(f))
    return std::nullopt;
  return read();
}

bool tls_client::send_envelope(const std::string& to, const std::string& payload,
                               const std::string& route) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_recipient(to);
  e->set_route(route);
  e->set_payload(payload);
  return send(f);
}

bool tls_client::fill(steady::time_point deadline) {
  if (eof_ || ssl_ == nullptr)
    return false;
  char buf[16384];
  for (;;) {
    ERR_clear_error();
    auto n = SSL_read(as_ssl(ssl_), buf, sizeof buf);
    if (n > 0) {
      splitter_.append(buf, static_cast<size_t>(n));
      return true;
    }
    auto e = SSL_get_error(as_ssl(ssl_), n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (wait_for(fd_, e, deadline))
        continue;
      return false; // timeout
    }
    eof_ = true;
    if (e == SSL_ERROR_ZERO_RETURN) {
      close_notify_ = true;
    } else {
      error_ = reasons(as_ssl(ssl_));
      ok_ = false;
    }
    return false;
  }
}

std::optional<v1::Frame> tls_client::read(std::chrono::milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    std::string_view body;
    if (splitter_.next(body)) {
      v1::Frame f;
      if (proto::decode_frame(body, f) != proto::frame_error::none)
        return std::nullopt;
      return f;
    }
    splitter_.compact();
    if (splitter_.error() != proto::frame_error::none || !fill(deadline))
      return std::nullopt;
  }
}

std::optional<v1::Frame> tls_client::read_kind(v1::Frame::KindCase kind,
                                               std::chrono::milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (steady::now() < deadline) {
    auto f = read(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()));
    if (!f)
      return std::nullopt;
    if (f->kind_case() == kind)
      return f;
    if (f->has_heartbeat() && f->heartbeat().seq() != 0) {
      v1::Frame reply;
      reply.mutable_heartbeat()->set_reply_to(f->heartbeat().seq());
      send(reply);
    }
  }
  return std::nullopt;
}

bool tls_client::wait_closed(std::chrono::milliseconds timeout, std::vector<v1::Frame>* before) {
  auto deadline = steady::now() + timeout;
  while (steady::now() < deadline) {
    auto f = read(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()));
    if (f) {
      if (before != nullptr)
        before->push_back(std::move(*f));
      continue;
    }
    if (eof_) {
      ::shutdown(fd_, SHUT_RDWR); // like a real client: hang up once the server has
      return true;
    }
  }
  return false;
}

} // namespace convoke::test
