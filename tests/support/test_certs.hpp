#pragma once

// Certificates made at test time (OpenSSL API, no `openssl` CLI), written as
// PEM files into a fresh temporary directory that is removed afterwards:
//
//   ca/            the CA everything below is signed by
//   server         CN=localhost, SAN DNS:localhost + IP:127.0.0.1
//   client         CN=agent-a (a client certificate)
//   expired        CN=agent-old, valid until yesterday
//   other_ca       another CA, and other_server (CN=localhost) signed by it
//   wrong_host     signed by the CA, but only for DNS:elsewhere.example
//
// EC P-256 keys: making the whole set takes a few milliseconds.

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace convoke::test {

struct cert_files {
  std::string cert;
  std::string key;
};

struct test_certs {
  std::filesystem::path dir;
  std::string ca;       // CA certificate (PEM)
  std::string other_ca; // an unrelated CA
  cert_files server;
  cert_files client;
  cert_files expired;
  cert_files other_server;
  cert_files wrong_host;

  /// Makes the whole set; throws std::runtime_error if OpenSSL fails.
  test_certs();
  ~test_certs();
  test_certs(const test_certs&) = delete;
  test_certs& operator=(const test_certs&) = delete;

  /// A further certificate signed by the CA (`use_other_ca`: by the other
  /// one), written to `<name>.crt` / `<name>.key`. DNS names and IPs go into
  /// subjectAltName. Valid from `from` to `until` relative to now.
  cert_files issue(const std::string& name, const std::string& cn,
                   const std::vector<std::string>& dns, const std::vector<std::string>& ips,
                   bool use_other_ca = false, std::chrono::hours from = std::chrono::hours{-1},
                   std::chrono::hours until = std::chrono::hours{24 * 30});
};

/// Copies `from` over `to` atomically (write a temporary, then rename), as
/// an operator replacing certificate files would.
void replace_file(const std::string& from, const std::string& to);

/// Writes `text` to `path` (replacing it).
void write_text(const std::string& path, const std::string& text);

} // namespace convoke::test
