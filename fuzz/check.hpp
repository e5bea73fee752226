#pragma once

// Shared by the fuzz targets: an invariant check that survives NDEBUG and
// makes libFuzzer record the input (abort = crash).

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);          \
      std::abort();                                                                                \
    }                                                                                              \
  } while (0)
