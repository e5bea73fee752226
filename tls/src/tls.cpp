#include "convoke/tls/tls.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "convoke/common/error_table.hpp"

namespace convoke::tls {

namespace {

const error_row rows[] = {
  {static_cast<int>(errc::bad_file), "bad_file", "a certificate, key or CA file cannot be used"},
  {static_cast<int>(errc::verify_failed), "verify_failed", "certificate verification failed"},
  {static_cast<int>(errc::handshake_failed), "handshake_failed", "the TLS handshake failed"},
  {static_cast<int>(errc::protocol_error), "protocol_error", "TLS protocol error"},
};

const table_category& category() noexcept {
  static const table_category instance{"convoke.tls", rows};
  return instance;
}

SSL_CTX* as_ctx(void* p) noexcept {
  return static_cast<SSL_CTX*>(p);
}

SSL* as_ssl(void* p) noexcept {
  return static_cast<SSL*>(p);
}

BIO* as_bio(void* p) noexcept {
  return static_cast<BIO*>(p);
}

/// Empties OpenSSL's error queue of this thread and returns its reasons,
/// oldest first, without repeats ("no such file; system lib").
std::string take_errors() {
  std::string out;
  while (auto e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string r = reason != nullptr ? reason : fmt::format("error {:#x}", e);
    if (out.find(r) != std::string::npos)
      continue;
    if (!out.empty())
      out += "; ";
    out += r;
  }
  return out;
}

std::string bio_text(BIO* b) {
  char* data = nullptr;
  auto n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string{data, static_cast<size_t>(n)} : std::string{};
}

std::string describe_cert(X509* cert) {
  if (cert == nullptr)
    return "no certificate";
  std::string out = "subject=";
  BIO* b = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  out += bio_text(b);
  (void) BIO_reset(b);
  ASN1_TIME_print(b, X509_get0_notAfter(cert));
  auto not_after = bio_text(b);
  BIO_free(b);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  std::string fp;
  if (X509_digest(cert, EVP_sha256(), md, &len) == 1)
    for (unsigned i = 0; i < std::min(len, 8u); ++i)
      fp += fmt::format("{:02x}", md[i]);
  return fmt::format("{} sha256={} not_after=\"{}\"", out, fp, not_after);
}

/// The certificate's CN, or its first DNS subjectAltName.
std::string cert_name(X509* cert) {
  auto subject = X509_get_subject_name(cert);
  if (auto i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0) {
    unsigned char* utf8 = nullptr;
    auto n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
    if (n > 0) {
      std::string cn{reinterpret_cast<char*>(utf8), static_cast<size_t>(n)};
      OPENSSL_free(utf8);
      return cn;
    }
  }
  std::string name;
  auto sans
    = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans != nullptr && i < sk_GENERAL_NAME_num(sans); ++i) {
    auto gn = sk_GENERAL_NAME_value(sans, i);
    if (gn->type == GEN_DNS) {
      auto s = gn->d.dNSName;
      name.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                  static_cast<size_t>(ASN1_STRING_length(s)));
      break;
    }
  }
  GENERAL_NAMES_free(sans);
  return name;
}

bool is_ip_address(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

tl::unexpected<error> file_error(std::string_view what, const std::string& path) {
  return fail(errc::bad_file, fmt::format("{} '{}': {}", what, path, take_errors()));
}

struct ctx_deleter {
  void operator()(SSL_CTX* c) const noexcept {
    SSL_CTX_free(c);
  }
};
using ctx_holder = std::unique_ptr<SSL_CTX, ctx_deleter>;

ctx_holder new_ctx(const SSL_METHOD* method) {
  ERR_clear_error();
  ctx_holder c{SSL_CTX_new(method)};
  if (c) {
    SSL_CTX_set_min_proto_version(c.get(), TLS1_2_VERSION);
    // Idle connections give their 34 KiB of record buffers back.
    SSL_CTX_set_mode(c.get(), SSL_MODE_RELEASE_BUFFERS);
    // No renegotiation (TLS 1.2): a peer could make us redo handshakes.
    SSL_CTX_set_options(c.get(), SSL_OP_NO_RENEGOTIATION);
  }
  return c;
}

expected<> load_own_cert(SSL_CTX* c, const std::string& cert, const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(c, cert.c_str()) != 1)
    return file_error("certificate file", cert);
  if (SSL_CTX_use_PrivateKey_file(c, key.c_str(), SSL_FILETYPE_PEM) != 1)
    return file_error("key file", key);
  if (SSL_CTX_check_private_key(c) != 1)
    return fail(errc::bad_file, fmt::format("key file '{}' does not match certificate '{}': {}",
                                            key, cert, take_errors()));
  return {};
}

} // namespace

const std::error_category& error_category() noexcept {
  return category();
}

std::string_view to_string(client_verification v) noexcept {
  switch (v) {
  case client_verification::off:
    return "off";
  case client_verification::optional:
    return "optional";
  case client_verification::require:
    return "require";
  }
  return "off";
}

// -- context -----------------------------------------------------------------

context::~context() {
  SSL_CTX_free(as_ctx(ctx_));
}

expected<context_ptr> context::server(const server_settings& s) {
  if (s.cert_file.empty() || s.key_file.empty())
    return fail(errc::bad_file, "a TLS server needs a certificate file and a key file");
  auto c = new_ctx(TLS_server_method());
  if (!c)
    return fail(errc::bad_file, "cannot create a TLS context: " + take_errors());
  if (auto ok = load_own_cert(c.get(), s.cert_file, s.key_file); !ok)
    return tl::unexpected{std::move(ok.error())};
  if (s.verify != client_verification::off) {
    if (s.client_ca_file.empty())
      return fail(errc::bad_file, fmt::format("client verification '{}' needs a client CA file",
                                              to_string(s.verify)));
    if (SSL_CTX_load_verify_locations(c.get(), s.client_ca_file.c_str(), nullptr) != 1)
      return file_error("client CA file", s.client_ca_file);
    auto names = SSL_load_client_CA_file(s.client_ca_file.c_str());
    if (names == nullptr)
      return file_error("client CA file", s.client_ca_file);
    SSL_CTX_set_client_CA_list(c.get(), names);
    int mode = SSL_VERIFY_PEER;
    if (s.verify == client_verification::require)
      mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(c.get(), mode, nullptr);
  }
  // No session resumption: every connection verifies its peer afresh, and
  // TLS 1.3 sends no tickets nobody would use.
  SSL_CTX_set_session_cache_mode(c.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(c.get(), 0);
  std::shared_ptr<context> out{new context};
  out->server_ = true;
  out->description_ = describe_cert(SSL_CTX_get0_certificate(c.get()));
  out->ctx_ = c.release();
  return out;
}

expected<context_ptr> context::client(const client_settings& s) {
  if (s.server_name.empty())
    return fail(errc::bad_file, "a TLS client needs the server's name to verify");
  if (s.cert_file.empty() != s.key_file.empty())
    return fail(errc::bad_file, "a client certificate needs both a certificate and a key file");
  auto c = new_ctx(TLS_client_method());
  if (!c)
    return fail(errc::bad_file, "cannot create a TLS context: " + take_errors());
  if (s.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(c.get()) != 1)
      return fail(errc::bad_file, "cannot load the system's CA certificates: " + take_errors());
  } else if (SSL_CTX_load_verify_locations(c.get(), s.ca_file.c_str(), nullptr) != 1) {
    return file_error("CA file", s.ca_file);
  }
  if (!s.cert_file.empty())
    if (auto ok = load_own_cert(c.get(), s.cert_file, s.key_file); !ok)
      return tl::unexpected{std::move(ok.error())};
  SSL_CTX_set_verify(c.get(), SSL_VERIFY_PEER, nullptr);
  std::shared_ptr<context> out{new context};
  out->server_ = false;
  out->server_name_ = s.server_name;
  out->description_ = s.cert_file.empty() ? std::string{"no client certificate"}
                                          : describe_cert(SSL_CTX_get0_certificate(c.get()));
  out->ctx_ = c.release();
  return out;
}

expected<> verify_as_peer(const std::string& cert_file, const std::string& ca_file) {
  ERR_clear_error();
  std::unique_ptr<BIO, decltype(&BIO_free)> in{BIO_new_file(cert_file.c_str(), "r"), BIO_free};
  if (!in)
    return file_error("certificate file", cert_file);
  std::unique_ptr<X509, decltype(&X509_free)> leaf{
    PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr), X509_free};
  if (!leaf)
    return file_error("certificate file", cert_file);
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> chain{
    sk_X509_new_null(), [](STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }};
  while (auto next = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr))
    sk_X509_push(chain.get(), next);
  ERR_clear_error(); // the end of the file
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store{X509_STORE_new(), X509_STORE_free};
  if (!store || X509_STORE_load_file(store.get(), ca_file.c_str()) != 1)
    return file_error("CA file", ca_file);
  for (auto purpose : {"ssl_server", "ssl_client"}) {
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx{X509_STORE_CTX_new(),
                                                                        X509_STORE_CTX_free};
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), chain.get()) != 1
        || X509_STORE_CTX_set_default(ctx.get(), purpose) != 1)
      return fail(errc::bad_file, "cannot verify: " + take_errors());
    if (X509_verify_cert(ctx.get()) != 1)
      return fail(errc::verify_failed,
                  fmt::format("certificate '{}' does not verify against '{}' as a TLS {}: {}",
                              cert_file, ca_file, purpose + 4,
                              X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  return {};
}

// -- channel -----------------------------------------------------------------

channel::channel(context_ptr ctx) : ctx_(std::move(ctx)) {
  auto ssl = SSL_new(as_ctx(ctx_->native()));
  auto in = BIO_new(BIO_s_mem());
  auto out = BIO_new(BIO_s_mem());
  // An empty input buffer means "wait for more", never end of stream.
  BIO_set_mem_eof_return(in, -1);
  SSL_set_bio(ssl, in, out); // the SSL owns both BIOs now
  if (ctx_->is_server()) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    auto& name = ctx_->server_name();
    auto param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip_address(name)) {
      X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
      SSL_set_tlsext_host_name(ssl, name.c_str());
    }
  }
  ssl_ = ssl;
  in_ = in;
  out_ = out;
}

channel::~channel() {
  SSL_free(as_ssl(ssl_));
}

void channel::start() {
  (void) drive();
}

expected<> channel::feed(const char* data, size_t size, std::vector<char>& plain) {
  if (failed_)
    return fail(errc::protocol_error, "the TLS connection has failed already");
  if (size > 0 && BIO_write(as_bio(in_), data, static_cast<int>(size)) != static_cast<int>(size)) {
    failed_ = true;
    return fail(errc::protocol_error, "cannot buffer TLS input: " + take_errors());
  }
  if (!handshake_done_)
    if (auto ok = drive(); !ok || !handshake_done_)
      return ok;
  auto ssl = as_ssl(ssl_);
  // Through a buffer on the stack: `plain` grows only by what arrives, so an
  // idle session does not keep a record-sized buffer.
  char buf[16 * 1024];
  for (;;) {
    ERR_clear_error();
    auto n = SSL_read(ssl, buf, sizeof buf);
    if (n > 0) {
      plain.insert(plain.end(), buf, buf + n);
      continue;
    }
    auto e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return {};
    if (e == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return {};
    }
    return failure(n, false);
  }
}

expected<> channel::drive() {
  auto ssl = as_ssl(ssl_);
  ERR_clear_error();
  auto r = SSL_do_handshake(ssl);
  if (r != 1) {
    auto e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return {};
    return failure(r, true);
  }
  handshake_done_ = true;
  if (auto cert = SSL_get0_peer_certificate(ssl);
      cert != nullptr && SSL_get_verify_result(ssl) == X509_V_OK)
    peer_name_ = cert_name(cert);
  if (!early_.empty() && !closed_) {
    std::vector<char> early;
    early.swap(early_);
    encrypt(early.data(), early.size());
  }
  return {};
}

expected<> channel::failure(int ret, bool handshaking) {
  auto ssl = as_ssl(ssl_);
  failed_ = true;
  auto e = SSL_get_error(ssl, ret);
  auto reasons = take_errors();
  if (reasons.empty())
    reasons = e == SSL_ERROR_SYSCALL ? "unexpected end of the TLS stream"
                                     : fmt::format("TLS error {}", e);
  auto verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK && reasons.find("certificate verify failed") != std::string::npos)
    return fail(errc::verify_failed, fmt::format("certificate verify failed: {}",
                                                 X509_verify_cert_error_string(verify)));
  if (reasons.find("peer did not return a certificate") != std::string::npos)
    return fail(errc::verify_failed, "certificate verify failed: " + reasons);
  return fail(handshaking ? errc::handshake_failed : errc::protocol_error, reasons);
}

void channel::encrypt(const char* data, size_t size) {
  auto ssl = as_ssl(ssl_);
  while (size > 0) {
    ERR_clear_error();
    auto n = SSL_write(ssl, data, static_cast<int>(std::min<size_t>(size, 1 << 30)));
    if (n <= 0) { // cannot happen with a memory BIO, short of memory
      failed_ = true;
      ERR_clear_error();
      return;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void channel::write(const char* data, size_t size) {
  if (closed_ || failed_ || size == 0)
    return;
  if (!handshake_done_) {
    early_.insert(early_.end(), data, data + size);
    return;
  }
  encrypt(data, size);
}

size_t channel::take_output(std::vector<char>& out) {
  auto bio = as_bio(out_);
  auto n = BIO_ctrl_pending(bio);
  if (n == 0)
    return 0;
  auto at = out.size();
  out.resize(at + n);
  auto got = BIO_read(bio, out.data() + at, static_cast<int>(n));
  out.resize(at + static_cast<size_t>(std::max(got, 0)));
  return out.size() - at;
}

bool channel::has_output() const noexcept {
  return BIO_ctrl_pending(as_bio(out_)) > 0;
}

void channel::close() {
  if (closed_)
    return;
  closed_ = true;
  std::vector<char>{}.swap(early_);
  if (handshake_done_ && !failed_) {
    ERR_clear_error();
    SSL_shutdown(as_ssl(ssl_)); // writes close_notify to the output
    ERR_clear_error();
  }
}

std::string channel::description() const {
  auto ssl = as_ssl(ssl_);
  return fmt::format("{} {}", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

} // namespace convoke::tls
