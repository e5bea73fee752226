// OpenSSL's error queue is per thread, and SSL_get_error() reads it: an
// error left there by one connection makes the next SSL_read() of any
// other connection on the thread that merely would block look like a
// failure (OpenSSL: "the current thread's error queue must be empty before
// the TLS/SSL I/O operation is attempted"). CAF 0.17's openssl module
// never empties it (only its logging does, and Debian's build compiles the
// log out), so one failed handshake on the cluster port, or the close of a
// redundant node link, made CAF drop the healthy cluster links of the same
// I/O thread (docs/cluster.md).
//
// convoke-server therefore defines the four I/O calls CAF makes; the
// dynamic linker binds CAF's calls (and every other caller's) to these,
// which empty the queue and call OpenSSL's own. Only the executable links
// this file: it interposes for the whole process.

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

template <class F>
F next(const char* name) {
  auto f = reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
  if (f == nullptr) {
    std::fprintf(stderr, "convoke-server: OpenSSL's %s not found\n", name);
    std::abort();
  }
  return f;
}

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = next<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = next<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  static const auto real = next<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

int SSL_connect(SSL* ssl) {
  static const auto real = next<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

} // extern "C"
