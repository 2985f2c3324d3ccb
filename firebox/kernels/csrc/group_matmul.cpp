// Group-quantized matmul: out[m, n] = sum_k x[m, k] * w[n, k], for any number of rows m.
//
// Weights keep the checkpoint's 4- or 8-bit grid, one scale (and for q4 one offset) per group of
// 32 inputs, both fp16 (as GGUF stores them: a Q4_0/Q4_1 grid repacks without loss):
//   q4: w[n, k] = scale[n, g] * q + low[n, g],  q in 0..15     (GGUF Q4_1's grid)
//   q8: w[n, k] = scale[n, g] * q,              q in -127..127 (GGUF Q8_0's grid)
// Activations are quantized on entry, per row and group of 32, with their own scale, and each
// group's exact fp32 sum is kept for the `low` term:
//   to int16 (max |x| / 32767: a relative error near 1e-5), and the products are multiply-adds
//     of 16-bit pairs (`vpmaddwd`, or VNNI `vpdpwssd`): q8 weights always, q4 ones by default;
//   or, for q4 weights that ask for it (`--quantization fast`), to int8 (max |x| / 127), and the
//     products are u8 x s8 multiply-adds (`vpmaddubsw`, or VNNI `vpdpbusd`), four a lane: twice
//     the products per instruction, for a rounding that costs the default model 0.13 nats.
// Either way the integer sums of a group are exact.
//
// Layout: output columns in blocks of 16 (one AVX-512 register of fp32 lanes, two AVX2 ones):
//   q4 words [N/16, G, 4 quads, 16 columns] uint32: byte b of quad u of column n holds
//            q[n, 8u + b] in its low nibble and q[n, 8u + 4 + b] in its high one
//   q8 w     [N/16, G, 16 pairs, 16 columns, 2] int8: the pairs (k, k+1)
//   scale, low [N/16, G, 16] fp16
// so a load of quad u, masked (and shifted) per nibble, gives for the block's columns the 4 bytes
// that one u8 x s8 multiply-add takes against the broadcast x[m, 8u..8u+3] (or 8u+4..8u+7); or,
// shifted by 0, 8, 4 or 12 and masked, four int16 pairs (q[8u], q[8u+2]), (q[8u+1], q[8u+3]), ...
// against int16 activations the quantizer stored in that order; a q8 load widens to
// (w[n, 2j], w[n, 2j+1]) int16 pairs against the broadcast (x[2j], x[2j+1]).
//
// Batch invariance: every output element goes through the same operations in the same order
// however many rows the call has and however rows and columns are tiled (the int32 sums are
// exact; the fp32 steps run per lane in group order). A request's numbers therefore never depend
// on what else is in the batch, which is what makes a seeded sample repeat exactly.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "gguf_blocks.h"
#include "ops.h"

namespace {

constexpr int64_t kGroup = 32;
constexpr int64_t kPairs = kGroup / 2;
constexpr int64_t kBlock = 16;  // output columns per block

// --- activations ------------------------------------------------------------------------------

struct QuantizedRows {
  at::Tensor q;      // [M, K] int16 (q8 weights) or int8 (q4 weights)
  at::Tensor scale;  // [M, K / 32] fp32
  at::Tensor sum;    // [M, K / 32] fp32
};

// Where input k of a group of 8 goes for q4 weights times int16 activations: the pairs a shifted
// q4 word gives side by side (see q4_pair).
constexpr int kQ4x16Order[8] = {0, 2, 1, 3, 4, 6, 5, 7};

template <typename T, bool Q4_ORDER = false>
void quantize_row_groups(const float* x, int64_t num_groups, T* q, float* scale, float* sum) {
  constexpr float kMax = std::is_same_v<T, int8_t> ? 127.f : 32767.f;  // symmetric: no -128 / -32768
  for (int64_t i = 0; i < num_groups; ++i) {
    const float* xg = x + i * kGroup;
    float amax = 0.f, s = 0.f;
#pragma omp simd reduction(max : amax) reduction(+ : s)
    for (int64_t k = 0; k < kGroup; ++k) {
      amax = std::max(amax, std::fabs(xg[k]));
      s += xg[k];
    }
    const float inv = amax > 0.f ? kMax / amax : 0.f;
    if constexpr (Q4_ORDER) {
      for (int64_t k = 0; k < kGroup; ++k)
        q[i * kGroup + (k & ~7) + kQ4x16Order[k & 7]] = static_cast<T>(std::nearbyint(xg[k] * inv));
    } else {
#pragma omp simd
      for (int64_t k = 0; k < kGroup; ++k) q[i * kGroup + k] = static_cast<T>(std::nearbyint(xg[k] * inv));
    }
    scale[i] = amax / kMax;
    sum[i] = s;
  }
}

template <typename T, bool Q4_ORDER = false>
QuantizedRows quantize_rows(const at::Tensor& x) {
  const int64_t M = x.size(0), K = x.size(1), groups = K / kGroup;
  const auto dtype = std::is_same_v<T, int8_t> ? at::kChar : at::kShort;
  QuantizedRows r{at::empty({M, K}, x.options().dtype(dtype)), at::empty({M, groups}, x.options()),
                  at::empty({M, groups}, x.options())};
  const float* xp = x.data_ptr<float>();
  T* q = static_cast<T*>(r.q.data_ptr());
  float* scale = r.scale.data_ptr<float>();
  float* sum = r.sum.data_ptr<float>();
  at::parallel_for(0, M, 8, [&](int64_t begin, int64_t end) {
    quantize_row_groups<T, Q4_ORDER>(xp + begin * K, (end - begin) * groups, q + begin * K, scale + begin * groups,
                        sum + begin * groups);
  });
  return r;
}

// --- one register of 16 columns ----------------------------------------------------------------

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define FIREBOX_GROUP_SIMD 1
using F = __m512;   // 16 fp32 lanes: one column block
using I = __m512i;  // 16 int32 lanes, or 16 int16 pairs
inline I izero() { return _mm512_setzero_si512(); }
inline F fzero() { return _mm512_setzero_ps(); }
inline I dot_pairs(I acc, I w, const int16_t* x_pair) {  // acc[n] += w[n].lo * x0 + w[n].hi * x1
  const I xb = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(x_pair));
#if defined(__AVX512VNNI__)
  return _mm512_dpwssd_epi32(acc, w, xb);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(w, xb));
#endif
}
inline I load_quad(const uint32_t* p) { return _mm512_loadu_si512(p); }
inline I low_nibbles(I quad) { return _mm512_and_si512(quad, _mm512_set1_epi8(0x0F)); }
inline I high_nibbles(I quad) { return _mm512_and_si512(_mm512_srli_epi16(quad, 4), _mm512_set1_epi8(0x0F)); }
// acc[n] += sum over b < 4 of w[n].byte(b) * x[b]: u8 weights by s8 activations. With VNNI acc
// holds int32 sums; without, int16 pair sums (at most 16 * 15 * 127 = 30480 a group: no overflow),
// widened once a group by `group_dot`.
inline I dot_quads(I acc, I w, const int8_t* x4) {
  const I xb = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(x4));
#if defined(__AVX512VNNI__)
  return _mm512_dpbusd_epi32(acc, w, xb);
#else
  return _mm512_add_epi16(acc, _mm512_maddubs_epi16(w, xb));
#endif
}
inline I group_dot(I acc) {
#if defined(__AVX512VNNI__)
  return acc;
#else
  return _mm512_madd_epi16(acc, _mm512_set1_epi16(1));
#endif
}
// int16 activations against q4 words: shifted and masked, a word's 32-bit lane gives the int16
// pair (q[8u + p'], q[8u + p' + 2]) of its column, whose activations the quantizer stored side by
// side (see `kQ4x16Order`): one `vpmaddwd` (or VNNI `vpdpwssd`) per pair, as for q8.
template <int SHIFT>
inline I q4_pair(I quad) { return _mm512_and_si512(_mm512_srli_epi32(quad, SHIFT), _mm512_set1_epi32(0x000F000F)); }
inline I unpack_q8(const int8_t* p) {  // 32 bytes -> 16 lanes of int16 pairs
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline F fload(const float* p) { return _mm512_loadu_ps(p); }
inline F fload_half(const at::Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline F fset1(float v) { return _mm512_set1_ps(v); }
inline F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
inline F ffma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
inline F fcvt(I a) { return _mm512_cvtepi32_ps(a); }
inline void fstore(float* p, F v) { _mm512_storeu_ps(p, v); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FIREBOX_GROUP_SIMD 1
struct F { __m256 a, b; };   // 16 fp32 lanes as two halves
struct I { __m256i a, b; };
inline I izero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
inline F fzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline I dot_pairs(I acc, I w, const int16_t* x_pair) {
  const __m256i xb = _mm256_set1_epi32(*reinterpret_cast<const int32_t*>(x_pair));
  I sum{_mm256_add_epi32(acc.a, _mm256_madd_epi16(w.a, xb)), _mm256_add_epi32(acc.b, _mm256_madd_epi16(w.b, xb))};
  // Keep the sum in its register here: otherwise GCC reassociates a tile's additions into trees
  // whose many partial products no longer fit AVX2's 16 registers and go to the stack.
  asm("" : "+x"(sum.a), "+x"(sum.b));
  return sum;
}
inline I load_quad(const uint32_t* p) {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8))};
}
inline I low_nibbles(I quad) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  return {_mm256_and_si256(quad.a, mask), _mm256_and_si256(quad.b, mask)};
}
inline I high_nibbles(I quad) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  return {_mm256_and_si256(_mm256_srli_epi16(quad.a, 4), mask), _mm256_and_si256(_mm256_srli_epi16(quad.b, 4), mask)};
}
inline I dot_quads(I acc, I w, const int8_t* x4) {  // int16 pair sums: see the AVX-512 version
  const __m256i xb = _mm256_set1_epi32(*reinterpret_cast<const int32_t*>(x4));
  I sum{_mm256_add_epi16(acc.a, _mm256_maddubs_epi16(w.a, xb)), _mm256_add_epi16(acc.b, _mm256_maddubs_epi16(w.b, xb))};
  asm("" : "+x"(sum.a), "+x"(sum.b));  // as in dot_pairs
  return sum;
}
inline I group_dot(I acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  return {_mm256_madd_epi16(acc.a, ones), _mm256_madd_epi16(acc.b, ones)};
}
template <int SHIFT>
inline I q4_pair(I quad) {
  const __m256i mask = _mm256_set1_epi32(0x000F000F);
  return {_mm256_and_si256(_mm256_srli_epi32(quad.a, SHIFT), mask), _mm256_and_si256(_mm256_srli_epi32(quad.b, SHIFT), mask)};
}
inline I unpack_q8(const int8_t* p) {
  return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)))};
}
inline F fload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline F fload_half(const at::Half* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return {_mm256_cvtph_ps(_mm256_castsi256_si128(h)), _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1))};
}
inline F fset1(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
inline F fmul(F x, F y) { return {_mm256_mul_ps(x.a, y.a), _mm256_mul_ps(x.b, y.b)}; }
inline F ffma(F x, F y, F z) { return {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)}; }
inline F fcvt(I x) { return {_mm256_cvtepi32_ps(x.a), _mm256_cvtepi32_ps(x.b)}; }
inline void fstore(float* p, F v) {
  _mm256_storeu_ps(p, v.a);
  _mm256_storeu_ps(p + 8, v.b);
}
#endif

// What a call multiplies: 4-bit weights by int8 or int16 activations, or 8-bit ones by int16.
enum Kind { kQ4x8, kQ4x16, kQ8x16 };

struct GroupWeights {
  Kind kind;
  const uint32_t* q4;      // [NB, G, 4, 16]
  const int8_t* q8;        // [NB, G, 16, 16, 2]
  const at::Half* scale;   // [NB, G, 16]
  const at::Half* low;     // [NB, G, 16]; q4 only
  int64_t groups;
};

struct Rows {
  const void* q;  // int8 for q4 weights, int16 for q8 ones
  const float* scale;
  const float* sum;
  int64_t K, groups;
};

#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr bool kWideRegisters = true;  // 32 registers, one per 16-lane value
#else
constexpr bool kWideRegisters = false;  // AVX2: 16 registers, two per 16-lane value
#endif

#if defined(FIREBOX_GROUP_SIMD)
template <int MT, int NT>
inline void add_pair(I (&dots)[MT][NT], const I (&wv)[NT], const Rows& x, int64_t m0, int64_t k) {
  const int16_t* xq = static_cast<const int16_t*>(x.q);
  for (int c = 0; c < NT; ++c)
    for (int r = 0; r < MT; ++r) dots[r][c] = dot_pairs(dots[r][c], wv[c], xq + (m0 + r) * x.K + k);
}

// Quad u of a group: inputs 8u..8u+3 in the low nibbles of a column's word, 8u+4..8u+7 in the high.
template <int MT, int NT>
inline void add_quad(I (&dots)[MT][NT], const I (&quads)[NT], const Rows& x, int64_t m0, int64_t k) {
  const int8_t* xq = static_cast<const int8_t*>(x.q);
  for (int c = 0; c < NT; ++c) {
    const I lo = low_nibbles(quads[c]), hi = high_nibbles(quads[c]);
    for (int r = 0; r < MT; ++r) {
      const int8_t* xr = xq + (m0 + r) * x.K + k;
      dots[r][c] = dot_quads(dot_quads(dots[r][c], lo, xr), hi, xr + 4);
    }
  }
}

// Quad u against int16 activations in kQ4x16Order: four pairs, each a shift and a mask.
template <int MT, int NT, int SHIFT, int PAIR>
inline void add_q4_pair(I (&dots)[MT][NT], const I (&quads)[NT], const Rows& x, int64_t m0, int64_t k) {
  I wv[NT];
  for (int c = 0; c < NT; ++c) wv[c] = q4_pair<SHIFT>(quads[c]);
  add_pair<MT, NT>(dots, wv, x, m0, k + 2 * PAIR);
}

// MT rows x NT column blocks of the output, over all groups.
// The fp32 sums of the tile: in registers with AVX-512; with AVX2 in memory (L1), read and written
// once a group, because 16 registers hold a 4-row tile's integer dot products but not these as
// well, and the compiler spilled the dot products instead, a load and a store per multiply-add
// (measured: 15 multiply-adds a cycle of the 32 the two pipes do).
template <int MT, int NT>
struct TileSums {
  F value[MT][NT];
  F get(int r, int c) const { return value[r][c]; }
  void set(int r, int c, F v) { value[r][c] = v; }
};
template <int MT, int NT>
struct TileSumsInMemory {
  alignas(64) float value[MT][NT][kBlock];
  F get(int r, int c) const { return fload(value[r][c]); }
  void set(int r, int c, F v) { fstore(value[r][c], v); }
};

template <int MT, int NT, Kind KIND>
inline void tile(const GroupWeights& w, const Rows& x, int64_t m0, int64_t nb0, float* out, int64_t N) {
  std::conditional_t<kWideRegisters, TileSums<MT, NT>, TileSumsInMemory<MT, NT>> acc;
  for (int r = 0; r < MT; ++r)
    for (int c = 0; c < NT; ++c) acc.set(r, c, fzero());
  for (int64_t g = 0; g < w.groups; ++g) {
    I dots[MT][NT];
    for (int r = 0; r < MT; ++r)
      for (int c = 0; c < NT; ++c) dots[r][c] = izero();
    const auto load_quads = [&](I (&quads)[NT], int64_t u) {
      for (int c = 0; c < NT; ++c) quads[c] = load_quad(w.q4 + (((nb0 + c) * w.groups + g) * 4 + u) * kBlock);
    };
    if constexpr (KIND == kQ4x8) {
      for (int64_t u = 0; u < 4; ++u) {
        I quads[NT];
        load_quads(quads, u);
        add_quad<MT, NT>(dots, quads, x, m0, g * kGroup + 8 * u);
      }
      for (int r = 0; r < MT; ++r)
        for (int c = 0; c < NT; ++c) dots[r][c] = group_dot(dots[r][c]);
    } else if constexpr (KIND == kQ4x16) {
      for (int64_t u = 0; u < 4; ++u) {
        I quads[NT];
        load_quads(quads, u);
        const int64_t k = g * kGroup + 8 * u;
        add_q4_pair<MT, NT, 0, 0>(dots, quads, x, m0, k);   // (q[8u], q[8u+2]): the low nibbles of bytes 0, 2
        add_q4_pair<MT, NT, 8, 1>(dots, quads, x, m0, k);   // (q[8u+1], q[8u+3]): of bytes 1, 3
        add_q4_pair<MT, NT, 4, 2>(dots, quads, x, m0, k);   // (q[8u+4], q[8u+6]): the high nibbles of 0, 2
        add_q4_pair<MT, NT, 12, 3>(dots, quads, x, m0, k);  // (q[8u+5], q[8u+7]): of 1, 3
      }
    } else {
      for (int64_t j = 0; j < kPairs; ++j) {
        I wv[NT];
        for (int c = 0; c < NT; ++c) wv[c] = unpack_q8(w.q8 + (((nb0 + c) * w.groups + g) * kPairs + j) * kBlock * 2);
        add_pair<MT, NT>(dots, wv, x, m0, g * kGroup + 2 * j);
      }
    }
    for (int c = 0; c < NT; ++c) {
      const int64_t at = ((nb0 + c) * w.groups + g) * kBlock;
      const F sv = fload_half(w.scale + at);
      for (int r = 0; r < MT; ++r) {
        const int64_t rg = (m0 + r) * x.groups + g;
        F sum = ffma(fcvt(dots[r][c]), fmul(sv, fset1(x.scale[rg])), acc.get(r, c));
        if (KIND != kQ8x16) sum = ffma(fload_half(w.low + at), fset1(x.sum[rg]), sum);
        acc.set(r, c, sum);
      }
    }
  }
  for (int r = 0; r < MT; ++r)
    for (int c = 0; c < NT; ++c) {
      const int64_t n = (nb0 + c) * kBlock;
      float* o = out + (m0 + r) * N + n;
      if (n + kBlock <= N) {
        fstore(o, acc.get(r, c));
      } else {  // the last block of a width that is not a multiple of 16
        float tmp[kBlock];
        fstore(tmp, acc.get(r, c));
        std::copy(tmp, tmp + (N - n), o);
      }
    }
}
#endif

// The same arithmetic without SIMD (for CPUs with neither AVX2 nor AVX-512).
void scalar_tile(const GroupWeights& w, const Rows& x, int64_t m, int64_t nb, float* out, int64_t N) {
  for (int64_t lane = 0; lane < kBlock && nb * kBlock + lane < N; ++lane) {
    float acc = 0.f;
    for (int64_t g = 0; g < w.groups; ++g) {
      int32_t dot = 0;
      for (int64_t k = 0; k < kGroup; ++k) {
        int32_t wk, xk;
        if (w.kind != kQ8x16) {
          const uint32_t quad = w.q4[((nb * w.groups + g) * 4 + k / 8) * kBlock + lane];
          wk = (quad >> (8 * (k % 4) + 4 * ((k % 8) / 4))) & 0x0F;
          xk = w.kind == kQ4x8 ? static_cast<const int8_t*>(x.q)[m * x.K + g * kGroup + k]
                               : static_cast<const int16_t*>(x.q)[m * x.K + g * kGroup + (k & ~7) + kQ4x16Order[k & 7]];
        } else {
          wk = w.q8[(((nb * w.groups + g) * kPairs + k / 2) * kBlock + lane) * 2 + k % 2];
          xk = static_cast<const int16_t*>(x.q)[m * x.K + g * kGroup + k];
        }
        dot += wk * xk;
      }
      const int64_t at = (nb * w.groups + g) * kBlock + lane;
      const int64_t rg = m * x.groups + g;
      acc = std::fma(static_cast<float>(dot), static_cast<float>(w.scale[at]) * x.scale[rg], acc);
      if (w.kind != kQ8x16) acc = std::fma(static_cast<float>(w.low[at]), x.sum[rg], acc);
    }
    out[m * N + nb * kBlock + lane] = acc;
  }
}

// Column blocks per tile for MT rows: as many independent accumulation chains as the registers
// hold with the weights and the broadcast input (measured: tiles that spill lose).
template <int MT, Kind KIND>
constexpr int cols_per_tile() {
  if constexpr (kWideRegisters) return MT == 1 ? 4 : 2;
  return MT <= 2 ? 2 : 1;
}

template <int MT, Kind KIND>
void rows_over_blocks(const GroupWeights& w, const Rows& x, int64_t m0, int64_t nb_begin, int64_t nb_end, float* out,
                      int64_t N) {
#if defined(FIREBOX_GROUP_SIMD)
  constexpr int NT = cols_per_tile<MT, KIND>();
  int64_t nb = nb_begin;
  for (; nb + NT <= nb_end; nb += NT) tile<MT, NT, KIND>(w, x, m0, nb, out, N);
  for (; nb < nb_end; ++nb) tile<MT, 1, KIND>(w, x, m0, nb, out, N);
#else
  for (int64_t r = 0; r < MT; ++r)
    for (int64_t nb = nb_begin; nb < nb_end; ++nb) scalar_tile(w, x, m0 + r, nb, out, N);
#endif
}

template <Kind KIND>
void matmul_blocks(const GroupWeights& w, const Rows& x, int64_t M, int64_t nb_begin, int64_t nb_end, float* out,
                   int64_t N) {
  // Column blocks outer, rows inner: a slab of weights stays in L1 while every row passes by.
  // Six rows by two column blocks is the largest tile whose 24 accumulators stay in AVX-512's 32
  // registers with the weights and the broadcast input; AVX2's 16 hold four rows by one block.
  constexpr int64_t kSlab = 8;
  for (int64_t s = nb_begin; s < nb_end; s += kSlab) {
    const int64_t e = std::min(nb_end, s + kSlab);
    int64_t m = 0;
    if constexpr (kWideRegisters) {
      // sixes, but 7 and 8 left over go as 4 + 3 and 4 + 4, not 6 + 1 and 6 + 2 (thin tiles are slow)
      for (; M - m >= 6 && M - m != 7 && M - m != 8; m += 6) rows_over_blocks<6, KIND>(w, x, m, s, e, out, N);
    }
    for (; m + 4 <= M; m += 4) rows_over_blocks<4, KIND>(w, x, m, s, e, out, N);
    switch (M - m) {
      case 3: rows_over_blocks<3, KIND>(w, x, m, s, e, out, N); break;
      case 2: rows_over_blocks<2, KIND>(w, x, m, s, e, out, N); break;
      case 1: rows_over_blocks<1, KIND>(w, x, m, s, e, out, N); break;
      default: break;
    }
  }
}

at::Tensor group_matmul(const at::Tensor& x, const GroupWeights& w, int64_t N) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be fp32 [M, K]");
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1);
  TORCH_CHECK(K == w.groups * kGroup, "x has ", K, " columns; the weight expects ", w.groups * kGroup);
  at::Tensor out = at::empty({M, N}, xc.options());
  if (M == 0) return out;
  const QuantizedRows q = w.kind == kQ4x8    ? quantize_rows<int8_t>(xc)
                          : w.kind == kQ4x16 ? quantize_rows<int16_t, true>(xc)
                                             : quantize_rows<int16_t>(xc);
  const Rows rows{q.q.data_ptr(), q.scale.data_ptr<float>(), q.sum.data_ptr<float>(), K, w.groups};
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 4, [&](int64_t b, int64_t e) {
    switch (w.kind) {
      case kQ4x8: matmul_blocks<kQ4x8>(w, rows, M, b, e, out.data_ptr<float>(), N); break;
      case kQ4x16: matmul_blocks<kQ4x16>(w, rows, M, b, e, out.data_ptr<float>(), N); break;
      case kQ8x16: matmul_blocks<kQ8x16>(w, rows, M, b, e, out.data_ptr<float>(), N); break;
    }
  });
  return out;
}

void check_weights(const at::Tensor& packed, const at::Tensor& scale, int64_t N, int64_t cells, int64_t cell_size) {
  TORCH_CHECK(packed.dim() == 4 && packed.is_contiguous() && packed.size(2) == cells && packed.size(3) == kBlock * cell_size,
              "packed weights: [N/16, groups, ", cells, ", ", kBlock * cell_size, "]");
  TORCH_CHECK(packed.size(0) * kBlock >= N && packed.size(0) * kBlock < N + kBlock, "N does not match the blocks");
  TORCH_CHECK(scale.scalar_type() == at::kHalf && scale.is_contiguous() && scale.numel() == packed.size(0) * packed.size(1) * kBlock,
              "scales: fp16 [N/16, groups, 16]");
}

// --- packing ----------------------------------------------------------------------------------
// The layouts above from an fp32 [N, K] weight, with the same arithmetic as quant.py's reference
// (q4_grid / quantize_q8): the scale and offset are rounded to fp16 first and the levels computed
// from the rounded values (times the scale's fp32 reciprocal: a division per weight made packing
// the slowest part of loading), and torch rounds half to even, as nearbyint and at::Half do here.
// Columns past N (the padding of the last block) are zero.

constexpr float kSmallestScale = 5.9604645e-08f;  // 2^-24, fp16's smallest subnormal

inline float to_half(float v, at::Half* out) {  // stores v as fp16 and returns what was stored
  *out = at::Half(v);
  return static_cast<float>(*out);
}

void check_q4_layout(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& low, int64_t N, int64_t K) {
  const int64_t groups = K / kGroup, blocks = (N + kBlock - 1) / kBlock;
  TORCH_CHECK(packed.scalar_type() == at::kInt && packed.is_contiguous() && packed.sizes() == at::IntArrayRef({blocks, groups, 4, kBlock}),
              "packed: int32 [N/16, K/32, 4, 16]");
  for (const at::Tensor* t : {&scale, &low})
    TORCH_CHECK(t->scalar_type() == at::kHalf && t->is_contiguous() && t->sizes() == at::IntArrayRef({blocks, groups, kBlock}),
                "scale, low: fp16 [N/16, K/32, 16]");
}

// The q4 layout of an N x K weight, written into `packed`, `scale` and `low` (whole tensors or
// the rows of a fused layer's part), its group g of row n given by `fill(n, g, quads, scale,
// low)`: its four quad words, and the fp16 scale and offset written in place; `make_fill()` gives
// each thread its own `fill` (one that decodes GGUF rows keeps the row it decoded). Columns past
// N are zero.
template <typename MakeFill>
void pack_q4_layout(at::Tensor& packed, at::Tensor& scale, at::Tensor& low, int64_t N, int64_t K, const MakeFill& make_fill) {
  check_q4_layout(packed, scale, low, N, K);
  const int64_t groups = K / kGroup, blocks = (N + kBlock - 1) / kBlock;
  uint32_t* words = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>());
  at::Half* scales = scale.data_ptr<at::Half>();
  at::Half* lows = low.data_ptr<at::Half>();
  at::parallel_for(0, blocks, 8, [&](int64_t b, int64_t e) {
    auto fill = make_fill();
    uint32_t group_quads[4];
    for (int64_t nb = b; nb < e; ++nb)
      for (int64_t c = 0; c < kBlock; ++c) {
        const int64_t n = nb * kBlock + c;
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t at = (nb * groups + g) * kBlock + c;
          uint32_t* quads = words + (nb * groups + g) * 4 * kBlock + c;  // quad u at quads[u * kBlock]
          if (n >= N) {
            for (int64_t u = 0; u < 4; ++u) quads[u * kBlock] = 0;
            scales[at] = lows[at] = at::Half(0.f);
            continue;
          }
          fill(n, g, group_quads, scales + at, lows + at);
          for (int64_t u = 0; u < 4; ++u) quads[u * kBlock] = group_quads[u];
        }
      }
  });
}

// A float group's q4 grid as its four quad words: its min and max span the 16 levels. (The loops
// are written so that they vectorize: std::min / std::max reductions and clamps kept them scalar,
// and this was most of the load time of a Q6_K matrix.)
void q4_grid_quads(const float* wg, uint32_t* quads, at::Half* scale, at::Half* low) {
  uint32_t levels[kGroup];
  float lo = wg[0], hi = wg[0];
#pragma omp simd reduction(min : lo) reduction(max : hi)
  for (int64_t k = 1; k < kGroup; ++k) {
    lo = wg[k] < lo ? wg[k] : lo;
    hi = wg[k] > hi ? wg[k] : hi;
  }
  lo = to_half(lo, low);
  const float inv = 1.f / to_half(std::max((hi - lo) / 15.f, kSmallestScale), scale);
#pragma omp simd
  for (int64_t k = 0; k < kGroup; ++k) {
    float level = std::nearbyint((wg[k] - lo) * inv);
    level = level < 0.f ? 0.f : level;
    level = level > 15.f ? 15.f : level;
    levels[k] = static_cast<uint32_t>(static_cast<int32_t>(level));
  }
  for (int64_t u = 0; u < 4; ++u) {  // byte b of quad u: level 8u+b in its low nibble, 8u+4+b in its high one
    uint32_t quad = 0;
    for (int64_t b = 0; b < 4; ++b) quad |= (levels[8 * u + b] | levels[8 * u + 4 + b] << 4) << (8 * b);
    quads[u] = quad;
  }
}

// Column block nb of the q8 layout; `row(n)` gives row n's K floats.
template <typename Row>
void pack_block_q8(Row& row, int64_t N, int64_t K, int64_t nb, int8_t* packed, at::Half* scale) {
  const int64_t groups = K / kGroup;
  for (int64_t c = 0; c < kBlock; ++c) {
    const int64_t n = nb * kBlock + c;
    const float* w = n < N ? row(n) : nullptr;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t at = (nb * groups + g) * kBlock + c;
      int8_t* cells = packed + ((nb * groups + g) * kPairs * kBlock + c) * 2;
      if (n >= N) {
        scale[at] = at::Half(0.f);
        for (int64_t j = 0; j < kPairs; ++j) cells[j * kBlock * 2] = cells[j * kBlock * 2 + 1] = 0;
        continue;
      }
      const float* wg = w + g * kGroup;
      float amax = 0.f;
#pragma omp simd reduction(max : amax)
      for (int64_t k = 0; k < kGroup; ++k) amax = std::fabs(wg[k]) > amax ? std::fabs(wg[k]) : amax;
      const float inv = 1.f / to_half(std::max(amax / 127.f, kSmallestScale), scale + at);
      int32_t q[kGroup];
#pragma omp simd
      for (int64_t k = 0; k < kGroup; ++k) {
        float level = std::nearbyint(wg[k] * inv);
        level = level < -127.f ? -127.f : level;
        level = level > 127.f ? 127.f : level;
        q[k] = static_cast<int32_t>(level);
      }
      for (int64_t k = 0; k < kGroup; ++k) cells[(k / 2) * kBlock * 2 + k % 2] = static_cast<int8_t>(q[k]);
    }
  }
}

// The q8 layout of an N x K weight whose rows `make_row()` gives (one getter per thread), written
// into `packed` and `scale` (whole tensors or the rows of a fused layer's part).
template <typename MakeRow>
void pack_q8_layout(at::Tensor& packed, at::Tensor& scale, int64_t N, int64_t K, const MakeRow& make_row) {
  const int64_t groups = K / kGroup, blocks = (N + kBlock - 1) / kBlock;
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.is_contiguous() &&
                  packed.sizes() == at::IntArrayRef({blocks, groups, kPairs, kBlock * 2}),
              "packed: int8 [N/16, K/32, 16, 32]");
  TORCH_CHECK(scale.scalar_type() == at::kHalf && scale.is_contiguous() && scale.sizes() == at::IntArrayRef({blocks, groups, kBlock}),
              "scale: fp16 [N/16, K/32, 16]");
  at::parallel_for(0, blocks, 8, [&](int64_t b, int64_t e) {
    auto row = make_row();
    for (int64_t nb = b; nb < e; ++nb)
      pack_block_q8(row, N, K, nb, packed.data_ptr<int8_t>(), scale.data_ptr<at::Half>());
  });
}

// --- packing GGUF blocks -----------------------------------------------------------------------
// Q4_0 (w = d * (q - 8)), Q4_1 (w = d * q + m) and Q4_K (w = d * sc * q - dmin * m per 32 of a
// 256 super-block) are all the q4 grid already: their levels are copied, not recomputed from
// dequantized floats, and only the scale and offset are rounded to fp16 (exact for Q4_0/Q4_1;
// for Q4_K the products d * sc and dmin * m lose under 1e-3 of their value). Any other type
// (Q5_K, Q6_K, Q8_0, ...) is decoded a row at a time into a thread's buffer and gridded from
// there, with the same values and arithmetic as packing its dequantized matrix. Either way the
// whole model is never written and re-read as fp32 at load.

struct GgufMatrix {
  const uint8_t* bytes;
  int64_t type, K, row_bytes;
  const int64_t* order;  // the stored row of each model row, or null

  const uint8_t* row(int64_t n) const { return bytes + (order ? order[n] : n) * row_bytes; }
};

// Row n of a GGUF matrix as fp32, decoded once while a packer reads its groups in turn.
class DecodedRow {
 public:
  explicit DecodedRow(const GgufMatrix& m) : m_(m), values_(m.K) {}
  const float* operator()(int64_t n) {
    if (n != decoded_) {
      firebox::gguf::dequantize_row(m_.type, m_.row(n), m_.K, values_.data());
      decoded_ = n;
    }
    return values_.data();
  }

 private:
  const GgufMatrix& m_;
  std::vector<float> values_;
  int64_t decoded_ = -1;
};

bool is_q4_grid(int64_t type) {
  namespace gg = firebox::gguf;
  return type == gg::Q4_0 || type == gg::Q4_1 || type == gg::Q4_K;
}

GgufMatrix checked_gguf_matrix(const at::Tensor& raw, int64_t type, int64_t N, int64_t K, const at::Tensor& row_order) {
  int64_t block_size, type_size;
  TORCH_CHECK(firebox::gguf::block_layout(type, &block_size, &type_size), "no native decoder for GGML type ", type);
  TORCH_CHECK(K % block_size == 0 && K % kGroup == 0, "K is not whole blocks");
  const int64_t row_bytes = K / block_size * type_size;
  TORCH_CHECK(raw.scalar_type() == at::kByte && raw.is_contiguous() && raw.numel() == N * row_bytes,
              "raw: the tensor's N x K GGUF bytes");
  const bool reordered = row_order.numel() > 0;
  TORCH_CHECK(!reordered || (row_order.scalar_type() == at::kLong && row_order.numel() == N && row_order.is_contiguous()),
              "row_order: int64 [N] or empty");
  TORCH_CHECK(!reordered || (row_order.min().item<int64_t>() >= 0 && row_order.max().item<int64_t>() < N),
              "row_order out of range");
  return {raw.data_ptr<uint8_t>(), type, K, row_bytes, reordered ? row_order.data_ptr<int64_t>() : nullptr};
}

at::Tensor checked_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % kGroup == 0, "weight: [N, K] with K a multiple of 32");
  return weight.to(at::kFloat).contiguous();
}

}  // namespace

namespace firebox {

void pack_q4(at::Tensor weight, at::Tensor packed, at::Tensor scale, at::Tensor low) {
  const at::Tensor w = checked_weight(weight);
  const int64_t K = w.size(1);
  const float* values = w.data_ptr<float>();
  pack_q4_layout(packed, scale, low, w.size(0), K, [&] {
    return [&](int64_t n, int64_t g, uint32_t* quads, at::Half* scale, at::Half* low) {
      q4_grid_quads(values + n * K + g * kGroup, quads, scale, low);
    };
  });
}

void pack_q4_gguf(at::Tensor raw, int64_t ggml_type, int64_t N, int64_t K, at::Tensor row_order, at::Tensor packed,
                  at::Tensor scale, at::Tensor low) {
  const GgufMatrix m = checked_gguf_matrix(raw, ggml_type, N, K, row_order);
  if (!is_q4_grid(ggml_type)) {
    pack_q4_layout(packed, scale, low, N, K, [&] {
      return [&, row = DecodedRow(m)](int64_t n, int64_t g, uint32_t* quads, at::Half* scale, at::Half* low) mutable {
        q4_grid_quads(row(n) + g * kGroup, quads, scale, low);
      };
    });
    return;
  }
  pack_q4_layout(packed, scale, low, N, K, [&] {
    return [&](int64_t n, int64_t g, uint32_t* quads, at::Half* scale, at::Half* low) {
      float s, l;
      firebox::gguf::q4_group_quads(ggml_type, m.row(n), g, quads, &s, &l);
      *scale = at::Half(s);
      *low = at::Half(l);
    };
  });
}

void pack_q8(at::Tensor weight, at::Tensor packed, at::Tensor scale) {
  const at::Tensor w = checked_weight(weight);
  const int64_t K = w.size(1);
  const float* values = w.data_ptr<float>();
  pack_q8_layout(packed, scale, w.size(0), K, [&] { return [&](int64_t n) { return values + n * K; }; });
}

void pack_q8_gguf(at::Tensor raw, int64_t ggml_type, int64_t N, int64_t K, at::Tensor row_order, at::Tensor packed,
                  at::Tensor scale) {
  const GgufMatrix m = checked_gguf_matrix(raw, ggml_type, N, K, row_order);
  pack_q8_layout(packed, scale, N, K, [&] { return DecodedRow(m); });
}

at::Tensor q4_matmul(at::Tensor x, at::Tensor packed, at::Tensor scale, at::Tensor low, int64_t N,
                     int64_t activation_bits) {
  check_weights(packed, scale, N, 4, 1);
  TORCH_CHECK(activation_bits == 8 || activation_bits == 16, "activation_bits: 8 or 16");
  TORCH_CHECK(packed.scalar_type() == at::kInt, "q4 weights are int32 quads");
  TORCH_CHECK(low.sizes() == scale.sizes() && low.is_contiguous() && low.scalar_type() == at::kHalf, "low: like scale");
  const GroupWeights w{activation_bits == 8 ? kQ4x8 : kQ4x16, reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()), nullptr,
                       scale.data_ptr<at::Half>(), low.data_ptr<at::Half>(), packed.size(1)};
  return group_matmul(x, w, N);
}

at::Tensor q8_matmul(at::Tensor x, at::Tensor packed, at::Tensor scale, int64_t N) {
  check_weights(packed, scale, N, kPairs, 2);
  TORCH_CHECK(packed.scalar_type() == at::kChar, "q8 weights are int8");
  const GroupWeights w{kQ8x16, nullptr, packed.data_ptr<int8_t>(), scale.data_ptr<at::Half>(), nullptr, packed.size(1)};
  return group_matmul(x, w, N);
}

}  // namespace firebox

TORCH_LIBRARY_FRAGMENT(firebox, m) {
  m.def("q4_matmul(Tensor x, Tensor packed, Tensor scale, Tensor low, int N, int activation_bits) -> Tensor");
  m.def("q8_matmul(Tensor x, Tensor packed, Tensor scale, int N) -> Tensor");
  // The packers write into tensors the caller made (empty_q4 / empty_q8 in quant.py), so that the
  // parts of a fused layer go straight into their rows of the whole.
  m.def("pack_q4(Tensor weight, Tensor(a!) packed, Tensor(b!) scale, Tensor(c!) low) -> ()");
  m.def("pack_q8(Tensor weight, Tensor(a!) packed, Tensor(b!) scale) -> ()");
  m.def("pack_q4_gguf(Tensor raw, int ggml_type, int N, int K, Tensor row_order, Tensor(a!) packed, Tensor(b!) scale, "
        "Tensor(c!) low) -> ()");
  m.def("pack_q8_gguf(Tensor raw, int ggml_type, int N, int K, Tensor row_order, Tensor(a!) packed, Tensor(b!) scale) -> ()");
}

TORCH_LIBRARY_IMPL(firebox, CPU, m) {
  m.impl("q4_matmul", &firebox::q4_matmul);
  m.impl("q8_matmul", &firebox::q8_matmul);
  m.impl("pack_q4", &firebox::pack_q4);
  m.impl("pack_q8", &firebox::pack_q8);
  m.impl("pack_q4_gguf", &firebox::pack_q4_gguf);
  m.impl("pack_q8_gguf", &firebox::pack_q8_gguf);
}
