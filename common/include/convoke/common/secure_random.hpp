#pragma once

/// @file
/// Secrets and unguessable ids: everything a peer must not be able to
/// predict (resume tokens, request ids, trace ids) comes from here, never
/// from std::mt19937. Backed by libsodium (getrandom(2) on Linux).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace convoke::crypto {

/// Fills `buf` with `size` bytes from the operating system's CSPRNG.
void random_bytes(void* buf, size_t size);

/// A uniformly random 64-bit value from the CSPRNG.
uint64_t random_u64();

/// A random value in [1, 2^64): for ids where 0 means "none".
uint64_t random_nonzero_u64();

/// `bytes` random bytes as lower-case hex (2 * `bytes` characters).
std::string random_hex(size_t bytes);

/// Compares two secrets in time that depends on neither their contents nor
/// their lengths (both are hashed with a per-process random key first).
bool equal_constant_time(std::string_view a, std::string_view b) noexcept;

/// A one-way digest (BLAKE2b-256, lower-case hex) of a high-entropy secret
/// such as a resume token: other parties can check a presented secret
/// against it without holding the secret.
std::string digest_hex(std::string_view secret);

} // namespace convoke::crypto
