// Weight-only group-quantized matmul for the few-row steps of decoding (memory-bound: the weight
// bytes read per step set the speed, so the weights stay 4- or 8-bit and are widened in registers).
//
//   out[m, n] = sum_k x[m, k] * w[n, k]
//   q4: w[n, k] = scale[n, g] * q + low[n, g],  q in 0..15, g = k / 32   (GGUF Q4_1's grid)
//       packed [N, K/2] uint8: in group g, byte i holds element 32g+i (low nibble) and 32g+16+i (high)
//   q8: w[n, k] = scale[n, g] * q,  q in -127..127                        (GGUF Q8_0's grid)
//       packed [N, K] int8
//
// x is fp32 [M, K] with M small (at most kMaxRows per pass); out is fp32 [M, N]. Each weight group
// is widened once and used for every row of x. Work is split over output columns n.

#include <torch/extension.h>

#include "ops.h"
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

constexpr int64_t kGroup = 32;
constexpr int64_t kHalf = kGroup / 2;
constexpr int64_t kMaxRows = 8;

// Sum of x over each group: the `low` term of q4 is low * sum(x in group).
void group_sums(const float* x, int64_t rows, int64_t K, float* sums) {
  const int64_t groups = K / kGroup;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < kGroup; ++i) s += x[m * K + g * kGroup + i];
      sums[m * groups + g] = s;
    }
}

// --- SIMD: one group of 32 weights widened to fp32 lanes, times each row of x -----------------
// dot_q4 / dot_q8 return, for one group, sum_i q_i * x_i accumulated into `acc` lanes after the
// caller's scale: acc += d * (q . x). AVX-512 works on 16 lanes, AVX2 on 8, else plain C++.

#if defined(__AVX512F__)
#include <immintrin.h>
constexpr int64_t kLanes = 16;
struct Acc { __m512 a, b; };  // two chains, so consecutive FMAs of a row do not wait on each other
inline Acc acc_zero() { return {_mm512_setzero_ps(), _mm512_setzero_ps()}; }
inline float acc_sum(Acc a) { return _mm512_reduce_add_ps(_mm512_add_ps(a.a, a.b)); }
// 16 bytes of nibbles -> (low nibbles, high nibbles) as two 16-lane fp32 vectors
// The group's scale is folded into the widened weights once, not once per row of x.
inline void widen_q4(const uint8_t* qs, float d, __m512& lo, __m512& hi) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m512 dv = _mm512_set1_ps(d);
  lo = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask))));
  hi = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask))));
}
inline void widen_q8(const int8_t* qs, float d, __m512& a, __m512& b) {
  const __m512 dv = _mm512_set1_ps(d);
  a = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)))));
  b = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16)))));
}
inline Acc group_fma(__m512 w0, __m512 w1, const float* xg, Acc acc) {
  return {_mm512_fmadd_ps(w0, _mm512_loadu_ps(xg), acc.a), _mm512_fmadd_ps(w1, _mm512_loadu_ps(xg + 16), acc.b)};
}
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
constexpr int64_t kLanes = 8;
struct Acc { __m256 a, b; };
inline Acc acc_zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float acc_sum(Acc a) { return hsum256(_mm256_add_ps(a.a, a.b)); }
struct W32 { __m256 v[4]; };  // 32 weights as four 8-lane vectors, in element order
inline void widen_q4(const uint8_t* qs, W32& w) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  w.v[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  w.v[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  w.v[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  w.v[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}
inline void widen_q8(const int8_t* qs, W32& w) {
  for (int j = 0; j < 4; ++j)
    w.v[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * j))));
}
inline Acc group_fma(float d, const W32& w, const float* xg, Acc acc) {
  __m256 t0 = _mm256_mul_ps(w.v[0], _mm256_loadu_ps(xg));
  __m256 t1 = _mm256_mul_ps(w.v[1], _mm256_loadu_ps(xg + 8));
  t0 = _mm256_fmadd_ps(w.v[2], _mm256_loadu_ps(xg + 16), t0);
  t1 = _mm256_fmadd_ps(w.v[3], _mm256_loadu_ps(xg + 24), t1);
  const __m256 dv = _mm256_set1_ps(d);
  return {_mm256_fmadd_ps(dv, t0, acc.a), _mm256_fmadd_ps(dv, t1, acc.b)};
}
#else
constexpr int64_t kLanes = 1;
#endif

template <int64_t ROWS>
void q4_columns(const uint8_t* packed, const float* scale, const float* low, const float* x, const float* xsum,
                int64_t K, int64_t n_begin, int64_t n_end, float* out, int64_t N) {
  const int64_t groups = K / kGroup;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const uint8_t* qn = packed + n * (K / 2);
    const float* sn = scale + n * groups;
    const float* ln = low + n * groups;
    float lows[ROWS] = {};
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    Acc acc[ROWS];
    for (int64_t m = 0; m < ROWS; ++m) acc[m] = acc_zero();
    for (int64_t g = 0; g < groups; ++g) {
#if defined(__AVX512F__)
      __m512 w0, w1;
      widen_q4(qn + g * kHalf, sn[g], w0, w1);
#else
      W32 w;
      widen_q4(qn + g * kHalf, w);
#endif
      for (int64_t m = 0; m < ROWS; ++m) {
#if defined(__AVX512F__)
        acc[m] = group_fma(w0, w1, x + m * K + g * kGroup, acc[m]);
#else
        acc[m] = group_fma(sn[g], w, x + m * K + g * kGroup, acc[m]);
#endif
        lows[m] += ln[g] * xsum[m * groups + g];
      }
    }
    for (int64_t m = 0; m < ROWS; ++m) out[m * N + n] = acc_sum(acc[m]) + lows[m];
#else
    float acc[ROWS] = {};
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* qs = qn + g * kHalf;
      for (int64_t m = 0; m < ROWS; ++m) {
        const float* xg = x + m * K + g * kGroup;
        float t = 0.f;
        for (int64_t i = 0; i < kHalf; ++i) t += (qs[i] & 0x0F) * xg[i] + (qs[i] >> 4) * xg[i + kHalf];
        acc[m] += sn[g] * t;
        lows[m] += ln[g] * xsum[m * groups + g];
      }
    }
    for (int64_t m = 0; m < ROWS; ++m) out[m * N + n] = acc[m] + lows[m];
#endif
  }
}

template <int64_t ROWS>
void q8_columns(const int8_t* packed, const float* scale, const float* x, int64_t K, int64_t n_begin,
                int64_t n_end, float* out, int64_t N) {
  const int64_t groups = K / kGroup;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* qn = packed + n * K;
    const float* sn = scale + n * groups;
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    Acc acc[ROWS];
    for (int64_t m = 0; m < ROWS; ++m) acc[m] = acc_zero();
    for (int64_t g = 0; g < groups; ++g) {
#if defined(__AVX512F__)
      __m512 w0, w1;
      widen_q8(qn + g * kGroup, sn[g], w0, w1);
      for (int64_t m = 0; m < ROWS; ++m) acc[m] = group_fma(w0, w1, x + m * K + g * kGroup, acc[m]);
#else
      W32 w;
      widen_q8(qn + g * kGroup, w);
      for (int64_t m = 0; m < ROWS; ++m) acc[m] = group_fma(sn[g], w, x + m * K + g * kGroup, acc[m]);
#endif
    }
    for (int64_t m = 0; m < ROWS; ++m) out[m * N + n] = acc_sum(acc[m]);
#else
    float acc[ROWS] = {};
    for (int64_t g = 0; g < groups; ++g) {
      const int8_t* qs = qn + g * kGroup;
      for (int64_t m = 0; m < ROWS; ++m) {
        const float* xg = x + m * K + g * kGroup;
        float t = 0.f;
        for (int64_t i = 0; i < kGroup; ++i) t += qs[i] * xg[i];
        acc[m] += sn[g] * t;
      }
    }
    for (int64_t m = 0; m < ROWS; ++m) out[m * N + n] = acc[m];
#endif
  }
}


template <typename Fn>
void for_rows(int64_t rows, Fn&& fn) {
  switch (rows) {
    case 1: fn(std::integral_constant<int64_t, 1>{}); break;
    case 2: fn(std::integral_constant<int64_t, 2>{}); break;
    case 3: fn(std::integral_constant<int64_t, 3>{}); break;
    case 4: fn(std::integral_constant<int64_t, 4>{}); break;
    case 5: fn(std::integral_constant<int64_t, 5>{}); break;
    case 6: fn(std::integral_constant<int64_t, 6>{}); break;
    case 7: fn(std::integral_constant<int64_t, 7>{}); break;
    default: fn(std::integral_constant<int64_t, 8>{}); break;
  }
}

void check_common(const at::Tensor& x, const at::Tensor& scale, int64_t K) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous fp32 [M, K]");
  TORCH_CHECK(x.size(1) == K && K % kGroup == 0, "K must match and be a multiple of 32");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous(), "scales must be contiguous fp32");
}

}  // namespace

namespace firebox {

at::Tensor q4_gemv(at::Tensor x, at::Tensor packed, at::Tensor scale, at::Tensor low) {
  const int64_t N = packed.size(0), K = packed.size(1) * 2, M = x.size(0);
  check_common(x, scale, K);
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous(), "packed must be uint8 [N, K/2]");
  at::Tensor out = at::empty({M, N}, x.options());
  at::Tensor sums = at::empty({M, K / kGroup}, x.options());
  const float* xp = x.data_ptr<float>();
  group_sums(xp, M, K, sums.data_ptr<float>());
  for (int64_t m0 = 0; m0 < M; m0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, M - m0);
    for_rows(rows, [&](auto r) {
      constexpr int64_t R = decltype(r)::value;
      at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
        q4_columns<R>(packed.data_ptr<uint8_t>(), scale.data_ptr<float>(), low.data_ptr<float>(), xp + m0 * K,
                      sums.data_ptr<float>() + m0 * (K / kGroup), K, b, e, out.data_ptr<float>() + m0 * N, N);
      });
    });
  }
  return out;
}

at::Tensor q8_gemv(at::Tensor x, at::Tensor packed, at::Tensor scale) {
  const int64_t N = packed.size(0), K = packed.size(1), M = x.size(0);
  check_common(x, scale, K);
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.is_contiguous(), "packed must be int8 [N, K]");
  at::Tensor out = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  for (int64_t m0 = 0; m0 < M; m0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, M - m0);
    for_rows(rows, [&](auto r) {
      constexpr int64_t R = decltype(r)::value;
      at::parallel_for(0, N, 16, [&](int64_t b, int64_t e) {
        q8_columns<R>(packed.data_ptr<int8_t>(), scale.data_ptr<float>(), xp + m0 * K, K, b, e,
                      out.data_ptr<float>() + m0 * N, N);
      });
    });
  }
  return out;
}

}  // namespace firebox


TORCH_LIBRARY_FRAGMENT(firebox, m) {
  m.def("q4_gemv(Tensor x, Tensor packed, Tensor scale, Tensor low) -> Tensor");
  m.def("q8_gemv(Tensor x, Tensor packed, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(firebox, CPU, m) {
  m.impl("q4_gemv", &firebox::q4_gemv);
  m.impl("q8_gemv", &firebox::q8_gemv);
}
