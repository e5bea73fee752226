#include "test_certs.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

namespace convoke::test {

namespace {

struct issuer {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
};

[[noreturn]] void openssl_failed(const char* what) {
  char buf[256];
  ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
  throw std::runtime_error(std::string{"test_certs: "} + what + ": " + buf);
}

EVP_PKEY* new_key() {
  auto k = EVP_EC_gen("P-256");
  if (k == nullptr)
    openssl_failed("EVP_EC_gen");
  return k;
}

void add_ext(X509* cert, X509* issuer_cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer_cert, cert, nullptr, nullptr, 0);
  auto ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr)
    openssl_failed("X509V3_EXT_conf_nid");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

/// A certificate for `key`, signed by `by` (self-signed when by.cert is null).
X509* make_cert(EVP_PKEY* key, const std::string& cn, const issuer& by, bool is_ca,
                const std::string& san, std::chrono::hours from, std::chrono::hours until) {
  static long serial = 1;
  auto cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++ + ::getpid() * 1000L);
  X509_gmtime_adj(X509_getm_notBefore(cert), static_cast<long>(from.count()) * 3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(until.count()) * 3600);
  X509_set_pubkey(cert, key);
  auto name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Convoke tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* issuer_cert = by.cert != nullptr ? by.cert : cert;
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert));
  if (is_ca) {
    add_ext(cert, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(cert, issuer_cert, NID_basic_constraints, "CA:FALSE");
    add_ext(cert, issuer_cert, NID_ext_key_usage, "serverAuth,clientAuth");
    if (!san.empty())
      add_ext(cert, issuer_cert, NID_subject_alt_name, san);
  }
  add_ext(cert, issuer_cert, NID_subject_key_identifier, "hash");
  if (X509_sign(cert, by.key != nullptr ? by.key : key, EVP_sha256()) == 0)
    openssl_failed("X509_sign");
  return cert;
}

void write_cert(const std::filesystem::path& path, X509* cert) {
  auto f = std::fopen(path.c_str(), "w");
  if (f == nullptr || PEM_write_X509(f, cert) != 1)
    throw std::runtime_error("test_certs: cannot write " + path.string());
  std::fclose(f);
}

void write_key(const std::filesystem::path& path, EVP_PKEY* key) {
  auto f = std::fopen(path.c_str(), "w");
  if (f == nullptr || PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw std::runtime_error("test_certs: cannot write " + path.string());
  std::fclose(f);
}

struct authority {
  issuer is;
  std::string file;
};

authority make_ca(const std::filesystem::path& dir, const std::string& name) {
  authority a;
  a.is.key = new_key();
  a.is.cert
    = make_cert(a.is.key, name, {}, true, "", std::chrono::hours{-1}, std::chrono::hours{24 * 365});
  a.file = (dir / (name + ".crt")).string();
  write_cert(a.file, a.is.cert);
  return a;
}

// The two CAs of the set currently being made (tests make one set at a time
// per process, and only from the test's thread).
authority* ca_main = nullptr;
authority* ca_other = nullptr;

} // namespace

test_certs::test_certs() {
  char tmpl[] = "/tmp/convoke-certs-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw std::runtime_error("test_certs: mkdtemp failed");
  dir = tmpl;
  static authority main_ca;
  static authority other;
  main_ca = make_ca(dir, "ca");
  other = make_ca(dir, "other-ca");
  ca_main = &main_ca;
  ca_other = &other;
  ca = main_ca.file;
  other_ca = other.file;
  server = issue("server", "localhost", {"localhost"}, {"127.0.0.1"});
  client = issue("client", "agent-a", {}, {});
  expired = issue("expired", "agent-old", {}, {}, false, std::chrono::hours{-48},
                  std::chrono::hours{-24});
  other_server = issue("other-server", "localhost", {"localhost"}, {"127.0.0.1"}, true);
  wrong_host = issue("wrong-host", "elsewhere.example", {"elsewhere.example"}, {});
}

test_certs::~test_certs() {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

cert_files test_certs::issue(const std::string& name, const std::string& cn,
                             const std::vector<std::string>& dns,
                             const std::vector<std::string>& ips, bool use_other_ca,
                             std::chrono::hours from, std::chrono::hours until) {
  std::string san;
  for (auto& d : dns)
    san += (san.empty() ? "" : ",") + std::string{"DNS:"} + d;
  for (auto& ip : ips)
    san += (san.empty() ? "" : ",") + std::string{"IP:"} + ip;
  auto key = new_key();
  auto& by = use_other_ca ? *ca_other : *ca_main;
  auto cert = make_cert(key, cn, by.is, false, san, from, until);
  cert_files out{(dir / (name + ".crt")).string(), (dir / (name + ".key")).string()};
  write_cert(out.cert, cert);
  write_key(out.key, key);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out{path, std::ios::trunc};
  out << text;
  if (!out)
    throw std::runtime_error("cannot write " + path);
}

void replace_file(const std::string& from, const std::string& to) {
  std::ifstream in{from};
  std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  write_text(to + ".tmp", text);
  std::filesystem::rename(to + ".tmp", to);
}

} // namespace convoke::test
