// Paged attention for CPU: every query token attends to its request's KV, read in place from the
// block pool (no gather copy). One work item per (query token, KV head): the group of query heads
// that share a KV head is processed together so that each key and value row is loaded once.
//
// Layout (as firebox/engine/runner/attention/backend.py documents):
//   q          [num_tokens, num_heads, head_dim]          fp32 or bf16
//   k_pool     [num_slots, num_kv_heads, head_dim]        fp32 or bf16 (a view of the block pool)
//   v_pool     [num_slots, num_kv_heads, head_dim]
//   slot_table [num_rows, max_len] int64: flat slot of each position of each request's context
//   token_row  [num_tokens] int64: which row of slot_table a query token reads
//   kv_len     [num_tokens] int64: how many positions that query token may see (causal bound)
//   out        [num_tokens, num_heads, head_dim]          same dtype as q

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;

template <typename T>
inline void load_row(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <>
inline void load_row<float>(const float* src, float* dst, int64_t n) {
  std::copy(src, src + n, dst);
}

inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  Vec acc(0.f);
  for (; i + Vec::size() <= n; i += Vec::size()) {
    acc = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), acc);
  }
  float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

inline void axpy(float alpha, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  Vec a(alpha);
  for (; i + Vec::size() <= n; i += Vec::size()) {
    at::vec::fmadd(a, Vec::loadu(x + i), Vec::loadu(y + i)).store(y + i);
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
void attend_one(
    const T* q_tok,        // [num_heads, head_dim] of this token
    const T* k_pool, const T* v_pool,
    const int64_t* slots,  // [len]
    int64_t len, int64_t kv_head, int64_t group, int64_t num_kv_heads, int64_t head_dim,
    float scale, T* out_tok, std::vector<float>& buf) {
  // buf: q (group*D) | k or v row (D) | scores (group*len) | acc (group*D)
  const int64_t D = head_dim;
  buf.resize(group * D + D + group * len + group * D);
  float* q = buf.data();
  float* row = q + group * D;
  float* scores = row + D;
  float* acc = scores + group * len;
  for (int64_t g = 0; g < group; ++g) {
    load_row(q_tok + (kv_head * group + g) * D, q + g * D, D);
  }
  for (int64_t t = 0; t < len; ++t) {
    load_row(k_pool + (slots[t] * num_kv_heads + kv_head) * D, row, D);
    for (int64_t g = 0; g < group; ++g) scores[g * len + t] = dot(q + g * D, row, D) * scale;
  }
  for (int64_t g = 0; g < group; ++g) {
    float* s = scores + g * len;
    float mx = *std::max_element(s, s + len);
    float sum = 0.f;
    for (int64_t t = 0; t < len; ++t) {
      s[t] = std::exp(s[t] - mx);
      sum += s[t];
    }
    float inv = 1.f / sum;
    for (int64_t t = 0; t < len; ++t) s[t] *= inv;
  }
  std::fill(acc, acc + group * D, 0.f);
  for (int64_t t = 0; t < len; ++t) {
    load_row(v_pool + (slots[t] * num_kv_heads + kv_head) * D, row, D);
    for (int64_t g = 0; g < group; ++g) axpy(scores[g * len + t], row, acc + g * D, D);
  }
  for (int64_t g = 0; g < group; ++g) {
    T* o = out_tok + (kv_head * group + g) * D;
    for (int64_t i = 0; i < D; ++i) o[i] = static_cast<T>(acc[g * D + i]);
  }
}

template <typename T>
void paged_attention_impl(
    const at::Tensor& out, const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
    const at::Tensor& slot_table, const at::Tensor& token_row, const at::Tensor& kv_len, double scale) {
  const int64_t num_tokens = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = k_pool.size(1);
  const int64_t group = num_heads / num_kv_heads;
  const int64_t max_len = slot_table.size(1);
  const T* qp = q.data_ptr<T>();
  const T* kp = k_pool.data_ptr<T>();
  const T* vp = v_pool.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t* slots = slot_table.data_ptr<int64_t>();
  const int64_t* rows = token_row.data_ptr<int64_t>();
  const int64_t* lens = kv_len.data_ptr<int64_t>();
  const int64_t q_stride = q.stride(0);
  const int64_t num_items = num_tokens * num_kv_heads;
  at::parallel_for(0, num_items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t tok = item / num_kv_heads, kv_head = item % num_kv_heads;
      attend_one<T>(qp + tok * q_stride, kp, vp, slots + rows[tok] * max_len, lens[tok], kv_head, group,
                    num_kv_heads, head_dim, static_cast<float>(scale), op + tok * num_heads * head_dim, buf);
    }
  });
}

void paged_attention(
    at::Tensor out, at::Tensor q, at::Tensor k_pool, at::Tensor v_pool, at::Tensor slot_table,
    at::Tensor token_row, at::Tensor kv_len, double scale) {
  TORCH_CHECK(q.dim() == 3 && k_pool.dim() == 3 && v_pool.dim() == 3, "q and pools must be 3-D");
  TORCH_CHECK(q.stride(2) == 1 && q.stride(1) == q.size(2), "q rows must be contiguous per token");
  TORCH_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous() && out.is_contiguous(), "pools/out contiguous");
  TORCH_CHECK(q.scalar_type() == k_pool.scalar_type() && q.scalar_type() == out.scalar_type(), "one dtype");
  TORCH_CHECK(slot_table.scalar_type() == at::kLong && token_row.scalar_type() == at::kLong &&
              kv_len.scalar_type() == at::kLong, "index tensors must be int64");
  TORCH_CHECK(q.size(1) % k_pool.size(1) == 0, "heads must be a multiple of KV heads");
  auto st = slot_table.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_attention", [&] {
    paged_attention_impl<scalar_t>(out, q, k_pool, v_pool, st, token_row, kv_len, scale);
  });
}

}  // namespace

TORCH_LIBRARY(firebox, m) {
  m.def(
      "paged_attention(Tensor(a!) out, Tensor q, Tensor k_pool, Tensor v_pool, Tensor slot_table, "
      "Tensor token_row, Tensor kv_len, float scale) -> ()");
}

TORCH_LIBRARY_IMPL(firebox, CPU, m) { m.impl("paged_attention", &paged_attention); }
