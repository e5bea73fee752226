#include "admin_client.hpp"

#include <memory>

#include <httplib.h>

namespace convoke::cli {

namespace {

std::string describe(httplib::Error e, std::chrono::milliseconds timeout) {
  using E = httplib::Error;
  switch (e) {
  case E::Connection:
    return "could not connect (refused, or no such host)";
  case E::ConnectionTimeout:
    return "no connection within " + std::to_string(timeout.count()) + " ms";
  case E::Read:
    return "no complete answer (the connection closed, or nothing came within "
           + std::to_string(timeout.count()) + " ms)";
  case E::Write:
    return "could not send the request";
  case E::SSLConnection:
    return "the TLS handshake failed (is it an https listener?)";
  case E::SSLLoadingCerts:
    return "could not load the CA certificates (--tls-ca)";
  case E::SSLServerVerification:
    return "the server's certificate was not accepted";
  default:
    return httplib::to_string(e);
  }
}

} // namespace

http_answer admin_get(const admin_options& opts, const std::string& path) {
  std::unique_ptr<httplib::ClientImpl> c;
  httplib::SSLClient* ssl = nullptr;
  if (opts.target.https) {
    auto s = std::make_unique<httplib::SSLClient>(opts.target.host, opts.target.port);
    if (!opts.ca_file.empty())
      s->set_ca_cert_path(opts.ca_file.c_str());
    s->enable_server_certificate_verification(true);
    ssl = s.get();
    c = std::move(s);
  } else {
    c = std::make_unique<httplib::ClientImpl>(opts.target.host, opts.target.port);
  }
  auto secs = opts.timeout.count() / 1000;
  auto usecs = (opts.timeout.count() % 1000) * 1000;
  c->set_connection_timeout(secs, usecs);
  c->set_read_timeout(secs, usecs);
  c->set_write_timeout(secs, usecs);
  if (!opts.password.empty())
    c->set_basic_auth(opts.user.empty() ? "convoke" : opts.user, opts.password);
  http_answer a;
  auto res = c->Get(path);
  if (!res) {
    a.error = describe(res.error(), opts.timeout);
    if (ssl != nullptr)
      if (auto v = ssl->get_openssl_verify_result(); v != 0)
        a.error += std::string{" ("} + X509_verify_cert_error_string(v) + ")";
    return a;
  }
  a.status = res->status;
  a.body = std::move(res->body);
  return a;
}

} // namespace convoke::cli
