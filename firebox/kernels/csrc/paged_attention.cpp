// Paged attention for CPU: every query token attends to its request's KV, read in place from the
// block pool (no gather copy). One work item per (query token, KV head); the query heads that
// share a KV head are processed together so that each key and value block is loaded once.
//
// Layout of one layer's pool (firebox/engine/runner/attention/cpu_paged.py allocates it):
//   k_pool [num_blocks, num_kv_heads, head_dim, block_size]   keys transposed within a block, so
//          that the scores of a block's tokens are computed lane-parallel, with no horizontal sums
//   v_pool [num_blocks, num_kv_heads, block_size, head_dim]
//   q          [num_tokens, num_heads, head_dim]     (token rows may be strided)
//   block_table[num_rows, max_blocks] int64          block ids of each request
//   token_row  [num_tokens] int64                    which row of block_table a query token reads
//   kv_len     [num_tokens] int64                    positions that query token may see (causal)
//   window     a sliding window: each query token sees only its last `window` positions (0: all)
//   out        [num_tokens, num_heads, head_dim]     contiguous
//
// The pools hold the query's dtype, or fp16 / bf16 under fp32 queries: a half-width cache halves
// the bytes a decode step reads (at 32 streams of ~100 tokens as many as the weights), and each
// key or value row is widened to fp32 in registers.

#include <torch/extension.h>

#include "ops.h"
#include <ATen/Parallel.h>
#include "simd_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

// p = softmax(s[:len]) in place.
inline void softmax_inplace(float* s, int64_t len) {
  float mx = s[0];
#pragma omp simd reduction(max : mx)
  for (int64_t t = 0; t < len; ++t) mx = s[t] > mx ? s[t] : mx;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < len; ++t) {
    s[t] = fast_exp(s[t] - mx);
    sum += s[t];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) s[t] *= inv;
}

// n values (a multiple of 16 for the fixed-size kernel's rows) widened to fp32.
template <typename T>
inline void widen(const T* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

#if defined(__AVX512F__)
template <>
inline void widen<c10::Half>(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <>
inline void widen<c10::BFloat16>(const c10::BFloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)));
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
#elif defined(__AVX2__) && defined(__F16C__)
template <>
inline void widen<c10::Half>(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <>
inline void widen<c10::BFloat16>(const c10::BFloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16)));
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
#endif

template <typename TQ, typename T>
void attend_one(const TQ* q_tok, const T* k_pool, const T* v_pool, const int64_t* blocks, int64_t start,
                int64_t len, int64_t kv_head, int64_t group, int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
                float scale, TQ* out_tok, std::vector<float>& buf) {
  const int64_t D = head_dim, BS = block_size;
  const int64_t num_blocks = (len + BS - 1) / BS, padded = num_blocks * BS;
  buf.resize(group * D + group * padded + group * D);
  float* q = buf.data();             // [group, D], pre-scaled
  float* scores = q + group * D;     // [group, padded]
  float* acc = scores + group * padded;  // [group, D]
  for (int64_t g = 0; g < group; ++g)
    for (int64_t i = 0; i < D; ++i) q[g * D + i] = static_cast<float>(q_tok[(kv_head * group + g) * D + i]) * scale;

  // scores[g, t] = q_g . k_t, a block of tokens at a time across SIMD lanes, from start's block on
  for (int64_t b = start / BS; b < num_blocks; ++b) {
    const T* kt = k_pool + (blocks[b] * num_kv_heads + kv_head) * D * BS;  // [D, BS]
    for (int64_t g = 0; g < group; ++g) {
      float* s = scores + g * padded + b * BS;
#pragma omp simd
      for (int64_t t = 0; t < BS; ++t) s[t] = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        const float qd = q[g * D + d];
        const T* row = kt + d * BS;
#pragma omp simd
        for (int64_t t = 0; t < BS; ++t) s[t] += qd * static_cast<float>(row[t]);
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) softmax_inplace(scores + g * padded + start, len - start);
  // acc[g] = sum_t p[g, t] * v_t over t in [start, len)
  std::fill(acc, acc + group * D, 0.f);
  for (int64_t b = start / BS; b < num_blocks; ++b) {
    const T* vb = v_pool + (blocks[b] * num_kv_heads + kv_head) * BS * D;  // [BS, D]
    const int64_t n = std::min(BS, len - b * BS);
    for (int64_t t = std::max<int64_t>(0, start - b * BS); t < n; ++t) {
      const T* row = vb + t * D;
      for (int64_t g = 0; g < group; ++g) {
        const float p = scores[g * padded + b * BS + t];
        float* a = acc + g * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) a[i] += p * static_cast<float>(row[i]);
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    TQ* o = out_tok + (kv_head * group + g) * D;
    for (int64_t i = 0; i < D; ++i) o[i] = static_cast<TQ>(acc[g * D + i]);
  }
}


// Fast path for the common shapes: block size 16, head_dim 64 or 128, up to 8 query heads per KV
// head, all known at compile time so that the score lanes and the output accumulators stay in
// registers. Same arithmetic as attend_one.
template <typename TQ, typename T, int64_t BS, int64_t D, int64_t G>
void attend_fixed(const TQ* q_tok, const T* k_pool, const T* v_pool, const int64_t* blocks, int64_t start,
                  int64_t len, int64_t kv_head, int64_t num_kv_heads, float scale, TQ* out_tok, std::vector<float>& buf) {
  const int64_t num_blocks = (len + BS - 1) / BS, padded = num_blocks * BS;
  buf.resize(G * padded);
  float* scores = buf.data();  // [G, padded]
  float q[G][D];
  for (int64_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < D; ++i) q[g][i] = static_cast<float>(q_tok[(kv_head * G + g) * D + i]) * scale;
  for (int64_t b = start / BS; b < num_blocks; ++b) {
    const T* kt = k_pool + (blocks[b] * num_kv_heads + kv_head) * D * BS;  // [D, BS]
    float s[G][BS] = {};
    for (int64_t d = 0; d < D; ++d) {
      float row[BS];
      widen(kt + d * BS, row, BS);
      for (int64_t g = 0; g < G; ++g)
#pragma omp simd
        for (int64_t t = 0; t < BS; ++t) s[g][t] += q[g][d] * row[t];
    }
    for (int64_t g = 0; g < G; ++g) std::memcpy(scores + g * padded + b * BS, s[g], sizeof(s[g]));
  }
  for (int64_t g = 0; g < G; ++g) softmax_inplace(scores + g * padded + start, len - start);
  float acc[G][D] = {};
  for (int64_t b = start / BS; b < num_blocks; ++b) {
    const T* vb = v_pool + (blocks[b] * num_kv_heads + kv_head) * BS * D;  // [BS, D]
    const int64_t n = std::min(BS, len - b * BS);
    for (int64_t t = std::max<int64_t>(0, start - b * BS); t < n; ++t) {
      float row[D];
      widen(vb + t * D, row, D);
      for (int64_t g = 0; g < G; ++g) {
        const float p = scores[g * padded + b * BS + t];
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) acc[g][i] += p * row[i];
      }
    }
  }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < D; ++i) out_tok[(kv_head * G + g) * D + i] = static_cast<TQ>(acc[g][i]);
}

using FixedFn = void (*)(const void*, const void*, const void*, const int64_t*, int64_t, int64_t, int64_t, int64_t,
                         float, void*, std::vector<float>&);

template <typename TQ, typename T, int64_t D, int64_t G>
void attend_fixed_erased(const void* q, const void* k, const void* v, const int64_t* blocks, int64_t start,
                         int64_t len, int64_t head, int64_t kv_heads, float scale, void* out, std::vector<float>& buf) {
  attend_fixed<TQ, T, 16, D, G>(static_cast<const TQ*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
                                blocks, start, len, head, kv_heads, scale, static_cast<TQ*>(out), buf);
}

template <typename TQ, typename T, int64_t D>
FixedFn fixed_for_group(int64_t group) {
  switch (group) {
    case 1: return &attend_fixed_erased<TQ, T, D, 1>;
    case 2: return &attend_fixed_erased<TQ, T, D, 2>;
    case 3: return &attend_fixed_erased<TQ, T, D, 3>;
    case 4: return &attend_fixed_erased<TQ, T, D, 4>;
    case 5: return &attend_fixed_erased<TQ, T, D, 5>;
    case 6: return &attend_fixed_erased<TQ, T, D, 6>;
    case 7: return &attend_fixed_erased<TQ, T, D, 7>;
    case 8: return &attend_fixed_erased<TQ, T, D, 8>;
    default: return nullptr;
  }
}

template <typename TQ, typename T>
FixedFn fixed_kernel(int64_t block_size, int64_t head_dim, int64_t group) {
  if (block_size != 16) return nullptr;
  if (head_dim == 64) return fixed_for_group<TQ, T, 64>(group);
  if (head_dim == 128) return fixed_for_group<TQ, T, 128>(group);
  return nullptr;
}

template <typename TQ, typename T>
void attend_all(const at::Tensor& out, const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                const at::Tensor& block_table, const at::Tensor& token_row, const at::Tensor& kv_len, double scale,
                int64_t window) {
  const int64_t num_tokens = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_pool.size(1), block_size = k_pool.size(3);
  const int64_t group = num_heads / num_kv_heads, max_blocks = block_table.size(1);
  const TQ* qp = q.data_ptr<TQ>();
  const T* kp = k_pool.data_ptr<T>();
  const T* vp = v_pool.data_ptr<T>();
  TQ* op = out.data_ptr<TQ>();
  const int64_t* tables = block_table.data_ptr<int64_t>();
  const int64_t* rows = token_row.data_ptr<int64_t>();
  const int64_t* lens = kv_len.data_ptr<int64_t>();
  const int64_t q_stride = q.stride(0);
  const FixedFn fixed = fixed_kernel<TQ, T>(block_size, head_dim, group);
  at::parallel_for(0, num_tokens * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tok = item / num_kv_heads, head = item % num_kv_heads, len = lens[tok];
      const int64_t start = window > 0 && len > window ? len - window : 0;
      if (fixed != nullptr) {
        fixed(qp + tok * q_stride, kp, vp, tables + rows[tok] * max_blocks, start, len, head, num_kv_heads,
              static_cast<float>(scale), op + tok * num_heads * head_dim, buf);
        continue;
      }
      attend_one<TQ, T>(qp + tok * q_stride, kp, vp, tables + rows[tok] * max_blocks, start, len, head, group,
                        num_kv_heads, head_dim, block_size, static_cast<float>(scale), op + tok * num_heads * head_dim,
                        buf);
    }
  });
}

}  // namespace

namespace firebox {

void paged_attention(at::Tensor out, at::Tensor q, at::Tensor k_pool, at::Tensor v_pool, at::Tensor block_table,
                     at::Tensor token_row, at::Tensor kv_len, double scale, int64_t window) {
  TORCH_CHECK(q.dim() == 3 && k_pool.dim() == 4 && v_pool.dim() == 4, "q: 3-D, pools: 4-D");
  TORCH_CHECK(q.stride(2) == 1 && q.stride(1) == q.size(2), "q rows must be contiguous per token");
  TORCH_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous() && out.is_contiguous(), "pools/out contiguous");
  TORCH_CHECK(q.scalar_type() == out.scalar_type() && k_pool.scalar_type() == v_pool.scalar_type(), "dtypes differ");
  TORCH_CHECK(block_table.scalar_type() == at::kLong && token_row.scalar_type() == at::kLong &&
              kv_len.scalar_type() == at::kLong && block_table.is_contiguous(), "index tensors: contiguous int64");
  const int64_t num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_pool.size(1), block_size = k_pool.size(3);
  TORCH_CHECK(num_heads % num_kv_heads == 0 && k_pool.size(2) == head_dim && v_pool.size(2) == block_size,
              "pool shapes do not match q");
  const auto pool = k_pool.scalar_type();
  if (pool == q.scalar_type()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_attention", [&] {
      attend_all<scalar_t, scalar_t>(out, q, k_pool, v_pool, block_table, token_row, kv_len, scale, window);
    });
  } else if (q.scalar_type() == at::kFloat && pool == at::kHalf) {
    attend_all<float, c10::Half>(out, q, k_pool, v_pool, block_table, token_row, kv_len, scale, window);
  } else if (q.scalar_type() == at::kFloat && pool == at::kBFloat16) {
    attend_all<float, c10::BFloat16>(out, q, k_pool, v_pool, block_table, token_row, kv_len, scale, window);
  } else {
    TORCH_CHECK(false, "paged_attention: a ", pool, " cache needs ", pool, " or fp32 queries, got ", q.scalar_type());
  }
}

// k[t] and v[t] ([kv_heads, head_dim] each) into their slot = block * block_size + offset.
template <typename TS, typename T>
void write_kv_impl(const at::Tensor& k, const at::Tensor& v, T* kp, T* vp, const int64_t* slots, int64_t kv_heads,
                   int64_t head_dim, int64_t block_size) {
  for (int64_t t = 0; t < k.size(0); ++t) {
    const int64_t block = slots[t] / block_size, offset = slots[t] % block_size;
    const TS* ks = k.data_ptr<TS>() + t * k.stride(0);
    const TS* vs = v.data_ptr<TS>() + t * v.stride(0);
    for (int64_t h = 0; h < kv_heads; ++h) {
      T* kt = kp + ((block * kv_heads + h) * head_dim) * block_size + offset;
      for (int64_t d = 0; d < head_dim; ++d) kt[d * block_size] = static_cast<T>(ks[h * head_dim + d]);
      T* vt = vp + ((block * kv_heads + h) * block_size + offset) * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) vt[d] = static_cast<T>(vs[h * head_dim + d]);
    }
  }
}

void write_kv(at::Tensor k, at::Tensor v, at::Tensor k_pool, at::Tensor v_pool, at::Tensor slots) {
  TORCH_CHECK(k.dim() == 3 && v.dim() == 3 && k.stride(2) == 1 && v.stride(2) == 1 &&
              k.stride(1) == k.size(2) && v.stride(1) == v.size(2), "k, v: [tokens, kv_heads, dim], rows contiguous");
  TORCH_CHECK(k_pool.dim() == 4 && k_pool.is_contiguous() && v_pool.is_contiguous(), "pools: contiguous 4-D");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && k_pool.scalar_type() == v_pool.scalar_type(), "dtypes differ");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.numel() == k.size(0), "one int64 slot per token");
  const auto pool = k_pool.scalar_type();
  auto write = [&](auto source_tag, auto pool_tag) {
    using TS = decltype(source_tag);
    using T = decltype(pool_tag);
    write_kv_impl<TS, T>(k, v, k_pool.data_ptr<T>(), v_pool.data_ptr<T>(), slots.data_ptr<int64_t>(), k.size(1),
                         k.size(2), k_pool.size(3));
  };
  if (pool == k.scalar_type()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, pool, "write_kv", [&] { write(scalar_t{}, scalar_t{}); });
  } else if (k.scalar_type() == at::kFloat && pool == at::kHalf) {
    write(float{}, c10::Half{});
  } else if (k.scalar_type() == at::kFloat && pool == at::kBFloat16) {
    write(float{}, c10::BFloat16{});
  } else {
    TORCH_CHECK(false, "write_kv: cannot store ", k.scalar_type(), " keys in a ", pool, " cache");
  }
}

}  // namespace firebox


TORCH_LIBRARY(firebox, m) {
  m.def(
      "paged_attention(Tensor(a!) out, Tensor q, Tensor k_pool, Tensor v_pool, Tensor block_table, "
      "Tensor token_row, Tensor kv_len, float scale, int window=0) -> ()");
  m.def("write_kv(Tensor k, Tensor v, Tensor(a!) k_pool, Tensor(b!) v_pool, Tensor slots) -> ()");
}

TORCH_LIBRARY_IMPL(firebox, CPU, m) {
  m.impl("paged_attention", &firebox::paged_attention);
  m.impl("write_kv", &firebox::write_kv);
}
