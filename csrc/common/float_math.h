// The natural logarithm and power of floats that the kernels need, written once for every
// device. CUDA's logf and powf and the host's libm may round differently (up to about 2 ulp
// apart), which can move a threshold or break a tie differently on a GPU; these functions
// evaluate in double a fixed sequence of IEEE additions, multiplications and divisions (no
// library calls; no fused multiply-adds under the build's -ffp-contract=off and --fmad=false)
// and round once to float, so the CPU and CUDA give the same bits. The double result is within
// about 2^-51 (log) and 2^-44 (pow, for results above float's smallest normal) of the exact
// value, so the float is the correctly rounded one but in rare cases near a rounding boundary
// (docs/design.md#determinism gives the measured agreement with glibc).
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/macros.h"

namespace rrm {
namespace float_math {

RRM_HOST_DEVICE inline uint64_t bits_of(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  return bits;
}

RRM_HOST_DEVICE inline double double_of(uint64_t bits) {
  double x;
  memcpy(&x, &bits, sizeof(x));
  return x;
}

// ln 2 split as in fdlibm: kLn2High has 32 significant bits, so n * kLn2High is exact for the
// |n| < 2^20 used here, and kLn2High + kLn2Low is ln 2 to about 2^-85.
constexpr double kLn2High = 6.93147180369123816490e-01;
constexpr double kLn2Low = 1.90821492927058770002e-10;

// ln(x) of a positive finite float x (subnormals included), in double. With x = 2^e m and m in
// [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s) for s = (m - 1) / (m + 1), |s| < 0.172, summed to
// s^23 (the rest is below 2^-60 of the sum). m - 1 and 2 + (m - 1) are exact for a float's
// m; the division is the one rounding of the leading term.
RRM_HOST_DEVICE inline double log_of_positive(float x) {
  const uint64_t bits = bits_of(static_cast<double>(x));
  int64_t exponent = static_cast<int64_t>(bits >> 52) - 1023;
  uint64_t mantissa = bits & 0x000FFFFFFFFFFFFFull;
  // Above sqrt(2) (mantissa bits of 1.4142135623730951), m is halved and e raised instead.
  if (mantissa > 0x6A09E667F3BCDull) {
    mantissa |= 0x3FE0000000000000ull;
    exponent += 1;
  } else {
    mantissa |= 0x3FF0000000000000ull;
  }
  const double f = double_of(mantissa) - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  double p = 1.0 / 23.0;
  p = p * z + 1.0 / 21.0;
  p = p * z + 1.0 / 19.0;
  p = p * z + 1.0 / 17.0;
  p = p * z + 1.0 / 15.0;
  p = p * z + 1.0 / 13.0;
  p = p * z + 1.0 / 11.0;
  p = p * z + 1.0 / 9.0;
  p = p * z + 1.0 / 7.0;
  p = p * z + 1.0 / 5.0;
  p = p * z + 1.0 / 3.0;
  const double two_s = s + s;
  const double log_m = two_s + two_s * (z * p);
  const double e = static_cast<double>(exponent);
  return e * kLn2High + (e * kLn2Low + log_m);
}

// e^t for |t| < 700, in double: t = n ln 2 + r with |r| <= ln 2 / 2 (slightly more when the
// rounding to n is off by one, harmless), e^r by its Taylor series to r^14 (the rest is below
// 2^-57), then scaled by 2^n through the exponent bits.
RRM_HOST_DEVICE inline double exp_of(double t) {
  // Adding 1.5 * 2^52 rounds t / ln 2 to the nearest integer.
  const double shifter = 6755399441055744.0;
  const double n = (t * 1.4426950408889634 + shifter) - shifter;
  const double r = (t - n * kLn2High) - n * kLn2Low;
  double p = 1.0 / 87178291200.0;  // 1 / 14!
  p = p * r + 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  return p * double_of(static_cast<uint64_t>(static_cast<int64_t>(n) + 1023) << 52);
}

// ln(x) as a float: -inf at 0, NaN below 0 or for NaN, +inf at +inf.
RRM_HOST_DEVICE inline float log_float(float x) {
  if (!(x > 0.f)) return x == 0.f ? -INFINITY : NAN;
  if (x == INFINITY) return x;
  return static_cast<float>(log_of_positive(x));
}

// x^y for x >= 0 and a finite y > 0, as a float (NaN for a negative x or NaN). Beyond |y ln x|
// of 104 (below half float's smallest subnormal) or 89 (above its largest finite value) the
// result is 0 or +inf without evaluating e^t, whose range reduction needs |t| < 700.
RRM_HOST_DEVICE inline float pow_float(float x, float y) {
  if (!(x > 0.f)) return x == 0.f ? 0.f : NAN;
  if (x == INFINITY) return x;
  const double t = static_cast<double>(y) * log_of_positive(x);
  if (t < -104.0) return 0.f;
  if (t > 89.0) return INFINITY;
  return static_cast<float>(exp_of(t));
}

}  // namespace float_math
}  // namespace rrm
