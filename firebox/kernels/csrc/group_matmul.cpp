// Group-quantized matmul: out[m, n] = sum_k x[m, k] * w[n, k], for any number of rows m.
//
// Weights keep the checkpoint's 4- or 8-bit grid, one scale (and for q4 one offset) per group of
// 32 inputs:
//   q4: w[n, k] = scale[n, g] * q + low[n, g],  q in 0..15     (GGUF Q4_1's grid)
//   q8: w[n, k] = scale[n, g] * q,              q in -127..127 (GGUF Q8_0's grid)
// Activations are quantized on entry, per row and group of 32, to int16 with their own scale
// (max |x| / 32767: a relative error near 1e-5, far below the weights' own), and each group's
// exact fp32 sum is kept for the `low` term. Products are then integer multiply-adds of 16-bit
// pairs (AVX-512 VNNI `vpdpwssd` where the CPU has it), exact in int32 within a group.
//
// Layout: output columns in blocks of 16 (one SIMD register of fp32 lanes), and within a block
// and a group, the 32 inputs as 16 pairs (k, k+1):
//   q4 nib   [N/16, G, 16 pairs, 16 columns] uint8: low nibble q[n, 2j], high nibble q[n, 2j+1]
//   q8 w     [N/16, G, 16 pairs, 16 columns, 2] int8
//   scale, low [N/16, G, 16] fp32
// so one load widens to a register of (w[n, 2j], w[n, 2j+1]) int16 pairs for 16 columns, and one
// `vpdpwssd` against the broadcast pair (x[m, 2j], x[m, 2j+1]) adds 32 products.
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
#include <tuple>

#include "ops.h"

namespace {

constexpr int64_t kGroup = 32;
constexpr int64_t kPairs = kGroup / 2;
constexpr int64_t kBlock = 16;  // output columns per block

// --- activations ------------------------------------------------------------------------------

struct QuantizedRows {
  at::Tensor q;      // [M, K] int16
  at::Tensor scale;  // [M, K / 32] fp32
  at::Tensor sum;    // [M, K / 32] fp32
};

void quantize_row_groups(const float* x, int64_t num_groups, int16_t* q, float* scale, float* sum) {
  for (int64_t i = 0; i < num_groups; ++i) {
    const float* xg = x + i * kGroup;
    float amax = 0.f, s = 0.f;
#pragma omp simd reduction(max : amax) reduction(+ : s)
    for (int64_t k = 0; k < kGroup; ++k) {
      amax = std::max(amax, std::fabs(xg[k]));
      s += xg[k];
    }
    const float inv = amax > 0.f ? 32767.f / amax : 0.f;
#pragma omp simd
    for (int64_t k = 0; k < kGroup; ++k) q[i * kGroup + k] = static_cast<int16_t>(std::nearbyint(xg[k] * inv));
    scale[i] = amax / 32767.f;
    sum[i] = s;
  }
}

QuantizedRows quantize_rows(const at::Tensor& x) {
  const int64_t M = x.size(0), K = x.size(1), groups = K / kGroup;
  QuantizedRows r{at::empty({M, K}, x.options().dtype(at::kShort)), at::empty({M, groups}, x.options()),
                  at::empty({M, groups}, x.options())};
  const float* xp = x.data_ptr<float>();
  int16_t* q = r.q.data_ptr<int16_t>();
  float* scale = r.scale.data_ptr<float>();
  float* sum = r.sum.data_ptr<float>();
  at::parallel_for(0, M, 8, [&](int64_t begin, int64_t end) {
    quantize_row_groups(xp + begin * K, (end - begin) * groups, q + begin * K, scale + begin * groups,
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
inline I unpack_q4(const uint8_t* p) {  // 16 bytes -> 16 lanes of (low nibble, high nibble) int16
  const I b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  // (b | b << 12) & 0x000F000F: the low nibble in bits 0-3, the high one in bits 16-19
  return _mm512_ternarylogic_epi32(b, _mm512_slli_epi32(b, 12), _mm512_set1_epi32(0x000F000F), 0xA8);
}
inline I unpack_q8(const int8_t* p) {  // 32 bytes -> 16 lanes of int16 pairs
  return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline F fload(const float* p) { return _mm512_loadu_ps(p); }
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
  return {_mm256_add_epi32(acc.a, _mm256_madd_epi16(w.a, xb)), _mm256_add_epi32(acc.b, _mm256_madd_epi16(w.b, xb))};
}
inline __m256i unpack_q4_half(const uint8_t* p) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_and_si256(_mm256_or_si256(b, _mm256_slli_epi32(b, 12)), _mm256_set1_epi32(0x000F000F));
}
inline I unpack_q4(const uint8_t* p) { return {unpack_q4_half(p), unpack_q4_half(p + 8)}; }
inline I unpack_q8(const int8_t* p) {
  return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)))};
}
inline F fload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline F fset1(float v) { return {_mm256_set1_ps(v), _mm256_set1_ps(v)}; }
inline F fmul(F x, F y) { return {_mm256_mul_ps(x.a, y.a), _mm256_mul_ps(x.b, y.b)}; }
inline F ffma(F x, F y, F z) { return {_mm256_fmadd_ps(x.a, y.a, z.a), _mm256_fmadd_ps(x.b, y.b, z.b)}; }
inline F fcvt(I x) { return {_mm256_cvtepi32_ps(x.a), _mm256_cvtepi32_ps(x.b)}; }
inline void fstore(float* p, F v) {
  _mm256_storeu_ps(p, v.a);
  _mm256_storeu_ps(p + 8, v.b);
}
#endif

struct GroupWeights {
  int bits;              // 4 or 8
  const uint8_t* q4;     // [NB, G, 16, 16]
  const int8_t* q8;      // [NB, G, 16, 16, 2]
  const float* scale;    // [NB, G, 16]
  const float* low;      // [NB, G, 16]; q4 only
  int64_t groups;
};

struct Rows {
  const int16_t* q;
  const float* scale;
  const float* sum;
  int64_t K, groups;
};

#if defined(FIREBOX_GROUP_SIMD)
// MT rows x NT column blocks of the output, over all groups.
template <int MT, int NT, int BITS>
inline void tile(const GroupWeights& w, const Rows& x, int64_t m0, int64_t nb0, float* out, int64_t N) {
  F acc[MT][NT];
  for (int r = 0; r < MT; ++r)
    for (int c = 0; c < NT; ++c) acc[r][c] = fzero();
  for (int64_t g = 0; g < w.groups; ++g) {
    I dots[MT][NT];
    for (int r = 0; r < MT; ++r)
      for (int c = 0; c < NT; ++c) dots[r][c] = izero();
    for (int64_t j = 0; j < kPairs; ++j) {
      for (int c = 0; c < NT; ++c) {
        const int64_t cell = ((nb0 + c) * w.groups + g) * kPairs + j;
        const I wv = BITS == 4 ? unpack_q4(w.q4 + cell * kBlock) : unpack_q8(w.q8 + cell * kBlock * 2);
        for (int r = 0; r < MT; ++r) dots[r][c] = dot_pairs(dots[r][c], wv, x.q + (m0 + r) * x.K + g * kGroup + 2 * j);
      }
    }
    for (int c = 0; c < NT; ++c) {
      const int64_t at = ((nb0 + c) * w.groups + g) * kBlock;
      const F sv = fload(w.scale + at);
      for (int r = 0; r < MT; ++r) {
        const int64_t rg = (m0 + r) * x.groups + g;
        acc[r][c] = ffma(fcvt(dots[r][c]), fmul(sv, fset1(x.scale[rg])), acc[r][c]);
        if (BITS == 4) acc[r][c] = ffma(fload(w.low + at), fset1(x.sum[rg]), acc[r][c]);
      }
    }
  }
  for (int r = 0; r < MT; ++r)
    for (int c = 0; c < NT; ++c) {
      const int64_t n = (nb0 + c) * kBlock;
      float* o = out + (m0 + r) * N + n;
      if (n + kBlock <= N) {
        fstore(o, acc[r][c]);
      } else {  // the last block of a width that is not a multiple of 16
        float tmp[kBlock];
        fstore(tmp, acc[r][c]);
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
      for (int64_t j = 0; j < kPairs; ++j) {
        const int64_t cell = ((nb * w.groups + g) * kPairs + j) * kBlock + lane;
        int32_t w0, w1;
        if (w.bits == 4) {
          w0 = w.q4[cell] & 0x0F;
          w1 = w.q4[cell] >> 4;
        } else {
          w0 = w.q8[2 * cell];
          w1 = w.q8[2 * cell + 1];
        }
        dot += w0 * x.q[m * x.K + g * kGroup + 2 * j] + w1 * x.q[m * x.K + g * kGroup + 2 * j + 1];
      }
      const int64_t at = (nb * w.groups + g) * kBlock + lane;
      const int64_t rg = m * x.groups + g;
      acc = std::fma(static_cast<float>(dot), w.scale[at] * x.scale[rg], acc);
      if (w.bits == 4) acc = std::fma(w.low[at], x.sum[rg], acc);
    }
    out[m * N + nb * kBlock + lane] = acc;
  }
}

template <int MT, int BITS>
void rows_over_blocks(const GroupWeights& w, const Rows& x, int64_t m0, int64_t nb_begin, int64_t nb_end, float* out,
                      int64_t N) {
#if defined(FIREBOX_GROUP_SIMD)
  // More column blocks per tile when there are fewer rows: independent accumulation chains.
  constexpr int NT = MT == 1 ? 4 : 2;
  int64_t nb = nb_begin;
  for (; nb + NT <= nb_end; nb += NT) tile<MT, NT, BITS>(w, x, m0, nb, out, N);
  for (; nb < nb_end; ++nb) tile<MT, 1, BITS>(w, x, m0, nb, out, N);
#else
  for (int64_t r = 0; r < MT; ++r)
    for (int64_t nb = nb_begin; nb < nb_end; ++nb) scalar_tile(w, x, m0 + r, nb, out, N);
#endif
}

template <int BITS>
void matmul_blocks(const GroupWeights& w, const Rows& x, int64_t M, int64_t nb_begin, int64_t nb_end, float* out,
                   int64_t N) {
  // Column blocks outer, rows inner: a slab of weights stays in L1 while every row passes by.
  // Six rows by two column blocks is the largest tile whose 24 accumulators stay in AVX-512's 32
  // registers with the weights and the broadcast input (measured: larger tiles spill and lose).
  constexpr int64_t kSlab = 8;
  for (int64_t s = nb_begin; s < nb_end; s += kSlab) {
    const int64_t e = std::min(nb_end, s + kSlab);
    int64_t m = 0;
    // sixes, but 7 and 8 left over go as 4 + 3 and 4 + 4, not 6 + 1 and 6 + 2 (thin tiles are slow)
    for (; M - m >= 6 && M - m != 7 && M - m != 8; m += 6) rows_over_blocks<6, BITS>(w, x, m, s, e, out, N);
    for (; m + 4 <= M; m += 4) rows_over_blocks<4, BITS>(w, x, m, s, e, out, N);
    switch (M - m) {
      case 3: rows_over_blocks<3, BITS>(w, x, m, s, e, out, N); break;
      case 2: rows_over_blocks<2, BITS>(w, x, m, s, e, out, N); break;
      case 1: rows_over_blocks<1, BITS>(w, x, m, s, e, out, N); break;
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
  const QuantizedRows q = quantize_rows(xc);
  const Rows rows{q.q.data_ptr<int16_t>(), q.scale.data_ptr<float>(), q.sum.data_ptr<float>(), K, w.groups};
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 4, [&](int64_t b, int64_t e) {
    if (w.bits == 4) {
      matmul_blocks<4>(w, rows, M, b, e, out.data_ptr<float>(), N);
    } else {
      matmul_blocks<8>(w, rows, M, b, e, out.data_ptr<float>(), N);
    }
  });
  return out;
}

void check_weights(const at::Tensor& packed, const at::Tensor& scale, int64_t N, int64_t per_cell) {
  TORCH_CHECK(packed.dim() == 4 && packed.is_contiguous() && packed.size(2) == kPairs &&
              packed.size(3) == kBlock * per_cell, "packed weights: [N/16, groups, 16, ", kBlock * per_cell, "]");
  TORCH_CHECK(packed.size(0) * kBlock >= N && packed.size(0) * kBlock < N + kBlock, "N does not match the blocks");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.numel() == packed.size(0) * packed.size(1) * kBlock,
              "scales: fp32 [N/16, groups, 16]");
}

// --- packing ----------------------------------------------------------------------------------
// The layouts above from an fp32 [N, K] weight, with the same arithmetic as quant.py's reference
// (q4_grid / quantize_q8): torch rounds half to even, as nearbyint does here. Columns past N (the
// padding of the last block) are zero.

void pack_block_q4(const float* w, int64_t N, int64_t K, int64_t nb, uint8_t* packed, float* scale, float* low) {
  const int64_t groups = K / kGroup;
  for (int64_t c = 0; c < kBlock; ++c) {
    const int64_t n = nb * kBlock + c;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t at = (nb * groups + g) * kBlock + c;
      uint8_t* cells = packed + (nb * groups + g) * kPairs * kBlock + c;
      if (n >= N) {
        scale[at] = 0.f;
        low[at] = 0.f;
        for (int64_t j = 0; j < kPairs; ++j) cells[j * kBlock] = 0;
        continue;
      }
      const float* wg = w + n * K + g * kGroup;
      float lo = wg[0], hi = wg[0];
      for (int64_t k = 1; k < kGroup; ++k) {
        lo = std::min(lo, wg[k]);
        hi = std::max(hi, wg[k]);
      }
      const float sc = std::max((hi - lo) / 15.f, std::numeric_limits<float>::min());
      scale[at] = sc;
      low[at] = lo;
      for (int64_t j = 0; j < kPairs; ++j) {
        const auto level = [&](float v) {
          return static_cast<uint8_t>(std::min(15.f, std::max(0.f, std::nearbyint((v - lo) / sc))));
        };
        cells[j * kBlock] = level(wg[2 * j]) | (level(wg[2 * j + 1]) << 4);
      }
    }
  }
}

void pack_block_q8(const float* w, int64_t N, int64_t K, int64_t nb, int8_t* packed, float* scale) {
  const int64_t groups = K / kGroup;
  for (int64_t c = 0; c < kBlock; ++c) {
    const int64_t n = nb * kBlock + c;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t at = (nb * groups + g) * kBlock + c;
      int8_t* cells = packed + ((nb * groups + g) * kPairs * kBlock + c) * 2;
      if (n >= N) {
        scale[at] = 0.f;
        for (int64_t j = 0; j < kPairs; ++j) cells[j * kBlock * 2] = cells[j * kBlock * 2 + 1] = 0;
        continue;
      }
      const float* wg = w + n * K + g * kGroup;
      float amax = 0.f;
      for (int64_t k = 0; k < kGroup; ++k) amax = std::max(amax, std::fabs(wg[k]));
      const float sc = std::max(amax / 127.f, std::numeric_limits<float>::min());
      scale[at] = sc;
      for (int64_t k = 0; k < kGroup; ++k)
        cells[(k / 2) * kBlock * 2 + k % 2] =
            static_cast<int8_t>(std::min(127.f, std::max(-127.f, std::nearbyint(wg[k] / sc))));
    }
  }
}

at::Tensor checked_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % kGroup == 0, "weight: [N, K] with K a multiple of 32");
  return weight.to(at::kFloat).contiguous();
}

}  // namespace

namespace firebox {

std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_q4(at::Tensor weight) {
  const at::Tensor w = checked_weight(weight);
  const int64_t N = w.size(0), K = w.size(1), groups = K / kGroup, blocks = (N + kBlock - 1) / kBlock;
  at::Tensor packed = at::empty({blocks, groups, kPairs, kBlock}, w.options().dtype(at::kByte));
  at::Tensor scale = at::empty({blocks, groups, kBlock}, w.options());
  at::Tensor low = at::empty({blocks, groups, kBlock}, w.options());
  at::parallel_for(0, blocks, 8, [&](int64_t b, int64_t e) {
    for (int64_t nb = b; nb < e; ++nb)
      pack_block_q4(w.data_ptr<float>(), N, K, nb, packed.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                    low.data_ptr<float>());
  });
  return {packed, scale, low};
}

std::tuple<at::Tensor, at::Tensor> pack_q8(at::Tensor weight) {
  const at::Tensor w = checked_weight(weight);
  const int64_t N = w.size(0), K = w.size(1), groups = K / kGroup, blocks = (N + kBlock - 1) / kBlock;
  at::Tensor packed = at::empty({blocks, groups, kPairs, kBlock * 2}, w.options().dtype(at::kChar));
  at::Tensor scale = at::empty({blocks, groups, kBlock}, w.options());
  at::parallel_for(0, blocks, 8, [&](int64_t b, int64_t e) {
    for (int64_t nb = b; nb < e; ++nb)
      pack_block_q8(w.data_ptr<float>(), N, K, nb, packed.data_ptr<int8_t>(), scale.data_ptr<float>());
  });
  return {packed, scale};
}

at::Tensor q4_matmul(at::Tensor x, at::Tensor packed, at::Tensor scale, at::Tensor low, int64_t N) {
  check_weights(packed, scale, N, 1);
  TORCH_CHECK(packed.scalar_type() == at::kByte, "q4 weights are uint8");
  TORCH_CHECK(low.sizes() == scale.sizes() && low.is_contiguous() && low.scalar_type() == at::kFloat, "low: like scale");
  const GroupWeights w{4, packed.data_ptr<uint8_t>(), nullptr, scale.data_ptr<float>(), low.data_ptr<float>(),
                       packed.size(1)};
  return group_matmul(x, w, N);
}

at::Tensor q8_matmul(at::Tensor x, at::Tensor packed, at::Tensor scale, int64_t N) {
  check_weights(packed, scale, N, 2);
  TORCH_CHECK(packed.scalar_type() == at::kChar, "q8 weights are int8");
  const GroupWeights w{8, nullptr, packed.data_ptr<int8_t>(), scale.data_ptr<float>(), nullptr, packed.size(1)};
  return group_matmul(x, w, N);
}

}  // namespace firebox

TORCH_LIBRARY_FRAGMENT(firebox, m) {
  m.def("q4_matmul(Tensor x, Tensor packed, Tensor scale, Tensor low, int N) -> Tensor");
  m.def("q8_matmul(Tensor x, Tensor packed, Tensor scale, int N) -> Tensor");
  m.def("pack_q4(Tensor weight) -> (Tensor, Tensor, Tensor)");
  m.def("pack_q8(Tensor weight) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(firebox, CPU, m) {
  m.impl("q4_matmul", &firebox::q4_matmul);
  m.impl("q8_matmul", &firebox::q8_matmul);
  m.impl("pack_q4", &firebox::pack_q4);
  m.impl("pack_q8", &firebox::pack_q8);
}
