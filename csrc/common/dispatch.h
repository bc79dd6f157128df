// Compile-time fast paths for the lattice feature dimension.
#pragma once

// Calls BODY with a constexpr int FEATURE_DIM equal to d for the common cases (2 and 5)
// and 0 (runtime dimension) otherwise.
#define RRM_DISPATCH_FEATURE_DIM(d, ...)          \
  [&] {                                           \
    switch (d) {                                  \
      case 2: {                                   \
        constexpr int FEATURE_DIM = 2;            \
        return __VA_ARGS__();                     \
      }                                           \
      case 5: {                                   \
        constexpr int FEATURE_DIM = 5;            \
        return __VA_ARGS__();                     \
      }                                           \
      default: {                                  \
        constexpr int FEATURE_DIM = 0;            \
        return __VA_ARGS__();                     \
      }                                           \
    }                                             \
  }()
