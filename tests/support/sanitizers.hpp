#pragma once

// Whether this test binary (and so the binaries it runs, built with the same
// flags) runs under a sanitizer. Memory figures (RSS) mean little there:
// ASan keeps freed memory in quarantine and pads every allocation.

namespace convoke::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized_build = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool sanitized_build = true;
#else
inline constexpr bool sanitized_build = false;
#endif
#else
inline constexpr bool sanitized_build = false;
#endif

} // namespace convoke::test
