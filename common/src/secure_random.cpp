#include "convoke/common/secure_random.hpp"

#include <cstdlib>

#include <sodium.h>

#include "convoke/common/text.hpp"

namespace convoke::crypto {

namespace {

/// sodium_init() once per process; it is thread-safe and idempotent, but
/// a static keeps it off every call.
struct sodium_ready {
  unsigned char compare_key[crypto_generichash_KEYBYTES];
  sodium_ready() {
    if (sodium_init() < 0)
      std::abort(); // no usable randomness source: refuse to run
    randombytes_buf(compare_key, sizeof(compare_key));
  }
};

const sodium_ready& ready() {
  static const sodium_ready instance;
  return instance;
}

} // namespace

void random_bytes(void* buf, size_t size) {
  ready();
  randombytes_buf(buf, size);
}

uint64_t random_u64() {
  uint64_t x = 0;
  random_bytes(&x, sizeof(x));
  return x;
}

uint64_t random_nonzero_u64() {
  for (;;)
    if (auto x = random_u64(); x != 0)
      return x;
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  random_bytes(raw.data(), raw.size());
  auto hex = to_hex(raw);
  sodium_memzero(raw.data(), raw.size());
  return hex;
}

std::string digest_hex(std::string_view secret) {
  std::string raw(32, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(raw.data()), raw.size(),
                     reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), nullptr,
                     0);
  return to_hex(raw);
}

bool equal_constant_time(std::string_view a, std::string_view b) noexcept {
  auto& r = ready();
  unsigned char ha[crypto_generichash_BYTES];
  unsigned char hb[crypto_generichash_BYTES];
  crypto_generichash(ha, sizeof(ha), reinterpret_cast<const unsigned char*>(a.data()), a.size(),
                     r.compare_key, sizeof(r.compare_key));
  crypto_generichash(hb, sizeof(hb), reinterpret_cast<const unsigned char*>(b.data()), b.size(),
                     r.compare_key, sizeof(r.compare_key));
  return sodium_memcmp(ha, hb, sizeof(ha)) == 0;
}

} // namespace convoke::crypto
