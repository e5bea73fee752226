// fuzz_tls_server: what a TLS session does with a peer's bytes, through
// convoke::tls (tls/src/tls.cpp) over memory BIOs.
//
// Input: byte 0 picks the server context (bit 0: client certificates
// optional, verified against the server's own self-signed certificate) and
// the read size (bits 1..7: 1 + value * 37 bytes); the rest is the byte
// stream, fed in reads of that size. The certificate is made once, at start
// (OpenSSL API, EC P-256). Checks:
// - plaintext comes out only once the handshake is done;
// - a failure is sticky: `failed()` stays set and every later feed fails;
// - a peer name exists only after a completed handshake;
// - after close(), plaintext writes add no output;
// - take_output empties the output.
// OpenSSL itself is not instrumented; the channel's own code is.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "check.hpp"
#include "convoke/tls/tls.hpp"

namespace {

using namespace convoke;

tls::context_ptr plain_ctx;
tls::context_ptr verifying_ctx;

bool make_contexts() {
  char dir[] = "/tmp/convoke-fuzz-tls-XXXXXX";
  if (mkdtemp(dir) == nullptr)
    return false;
  std::string cert = std::string{dir} + "/cert.pem";
  std::string key = std::string{dir} + "/key.pem";
  auto k = EVP_EC_gen("P-256");
  auto x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
  X509_set_pubkey(x, k);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(x));
  X509_sign(x, k, EVP_sha256());
  auto f = std::fopen(cert.c_str(), "w");
  PEM_write_X509(f, x);
  std::fclose(f);
  f = std::fopen(key.c_str(), "w");
  PEM_write_PrivateKey(f, k, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(k);
  auto a = tls::context::server({cert, key, "", tls::client_verification::off});
  auto b = tls::context::server({cert, key, cert, tls::client_verification::optional});
  std::remove(cert.c_str());
  std::remove(key.c_str());
  rmdir(dir);
  if (!a || !b)
    return false;
  plain_ctx = *a;
  verifying_ctx = *b;
  return true;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!make_contexts()) {
    std::fprintf(stderr, "fuzz_tls_server: cannot make the test certificate\n");
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  auto ctx = (data[0] & 1) != 0 ? verifying_ctx : plain_ctx;
  size_t chunk = 1 + static_cast<size_t>(data[0] >> 1) * 37;
  ++data;
  --size;
  tls::channel ch{ctx};
  std::vector<char> plain;
  std::vector<char> out;
  bool failed = false;
  for (size_t at = 0; at < size; at += chunk) {
    auto n = std::min(chunk, size - at);
    auto before = plain.size();
    auto ok = ch.feed(reinterpret_cast<const char*>(data + at), n, plain);
    FUZZ_CHECK(!failed || !ok);
    if (!ok) {
      failed = true;
      FUZZ_CHECK(ch.failed());
      FUZZ_CHECK(!ok.error().text.empty());
    }
    FUZZ_CHECK(plain.size() == before || ch.handshake_done());
    FUZZ_CHECK(ch.peer_name().empty() || ch.handshake_done());
    out.clear();
    ch.take_output(out);
    FUZZ_CHECK(!ch.has_output());
  }
  ch.write("reply", 5);
  ch.close();
  out.clear();
  ch.take_output(out);
  ch.write("after close", 11);
  FUZZ_CHECK(!ch.has_output());
  return 0;
}
