// exp(x) for float in plain arithmetic (no call), so that `#pragma omp simd` loops vectorize it:
// Cody-Waite range reduction by ln 2 and a degree-6 polynomial, as Cephes' expf. Relative error
// below 2e-7 over the range used (softmax and SiLU arguments); x < -87 gives 0.
#pragma once

#include <cstdint>
#include <cstring>

#pragma omp declare simd
inline float fast_exp(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  // round to nearest by adding and removing 1.5 * 2^23 (vectorizes, unlike roundf)
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
