// Compile-time fast paths: the lattice feature dimension, and counts such as channels or slots.
#pragma once

#include <cstdint>
#include <type_traits>

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

namespace rrm {

// Calls body(std::integral_constant<int, N>()) with N = value when value is one of Values, and
// with N = 0 (meaning "runtime value") otherwise, so that loops over a common count can be
// compiled for it. Host code only.
template <int... Values, typename Body>
void with_constant(int64_t value, const Body& body) {
  const bool matched = ((value == Values && (body(std::integral_constant<int, Values>()), true)) || ...);
  if (!matched) body(std::integral_constant<int, 0>());
}

}  // namespace rrm
