// Fused element-wise steps of a decoder layer. Each replaces several torch ops (and as many
// Python dispatches) with one pass over the data: at small batch sizes a decode step is made of
// hundreds of tiny ops, and their dispatch costs more than their arithmetic.
//
//   rms_norm(out, x, w, eps)                out = w * x / rms(x)                (HF: in fp32)
//   fused_add_rms_norm(x, residual, w, eps) residual += x; x = w * residual / rms(residual)
//   silu_and_mul(out, x)                    out = silu(x[:, :I]) * x[:, I:]
//   rotary_embedding(q, k, cos_sin)         rotate-half RoPE on q and k in place (strided views)

#include <torch/extension.h>

#include "ops.h"
#include <ATen/Parallel.h>
#include "simd_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace {

constexpr int64_t kRowsPerTask = 16;  // few-token steps run inline: a thread hand-off costs more

template <typename T>
float sum_squares(const T* x, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(x[i]);
    s += v * v;
  }
  return s;
}

template <typename T>
void norm_row(T* out, const T* x, const T* w, int64_t n, float eps) {
  const float inv = 1.f / std::sqrt(sum_squares(x, n) / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    // as transformers: normalize in fp32, round to the activation dtype, then scale
    const T normed = static_cast<T>(static_cast<float>(x[i]) * inv);
    out[i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(normed));
  }
}

void check_rows(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "expected [rows, hidden] with contiguous rows");
  TORCH_CHECK(w.is_contiguous() && w.numel() == x.size(1) && w.scalar_type() == x.scalar_type(), "bad weight");
}

}  // namespace

namespace firebox {

void rms_norm(at::Tensor out, at::Tensor x, at::Tensor w, double eps) {
  check_rows(x, w);
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(), "bad out");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
    const int64_t n = x.size(1), stride = x.stride(0);
    at::parallel_for(0, x.size(0), kRowsPerTask, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        norm_row(out.data_ptr<scalar_t>() + r * n, x.data_ptr<scalar_t>() + r * stride, w.data_ptr<scalar_t>(), n,
                 static_cast<float>(eps));
    });
  });
}

void fused_add_rms_norm(at::Tensor x, at::Tensor residual, at::Tensor w, double eps) {
  check_rows(x, w);
  TORCH_CHECK(x.is_contiguous() && residual.is_contiguous() && residual.sizes() == x.sizes(), "bad residual");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fused_add_rms_norm", [&] {
    const int64_t n = x.size(1);
    at::parallel_for(0, x.size(0), kRowsPerTask, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        scalar_t* xr = x.data_ptr<scalar_t>() + r * n;
        scalar_t* rr = residual.data_ptr<scalar_t>() + r * n;
        for (int64_t i = 0; i < n; ++i) rr[i] = static_cast<scalar_t>(static_cast<float>(rr[i]) + static_cast<float>(xr[i]));
        norm_row(xr, rr, w.data_ptr<scalar_t>(), n, static_cast<float>(eps));
      }
    });
  });
}

template <typename T>
void silu_mul_row(T* out, const T* gate, const T* up, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float g = static_cast<float>(gate[i]);
    const T silu = static_cast<T>(g / (1.f + fast_exp(-g)));
    out[i] = static_cast<T>(static_cast<float>(silu) * static_cast<float>(up[i]));
  }
}

void silu_and_mul(at::Tensor out, at::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.size(1) % 2 == 0, "expected contiguous [rows, 2 * inter]");
  const int64_t inter = x.size(1) / 2;
  TORCH_CHECK(out.is_contiguous() && out.size(0) == x.size(0) && out.size(1) == inter, "bad out");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "silu_and_mul", [&] {
    at::parallel_for(0, x.size(0), kRowsPerTask, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const scalar_t* gate = x.data_ptr<scalar_t>() + r * 2 * inter;
        silu_mul_row(out.data_ptr<scalar_t>() + r * inter, gate, gate + inter, inter);
      }
    });
  });
}

template <typename T>
void rotate_heads(T* x, int64_t token_stride, int64_t heads, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    T* xh = x + h * head_dim;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = static_cast<float>(xh[i]), x2 = static_cast<float>(xh[i + half]);
      xh[i] = static_cast<T>(x1 * cos[i] - x2 * sin[i]);
      xh[i + half] = static_cast<T>(x2 * cos[i] + x1 * sin[i]);
    }
  }
}

void rotary_embedding(at::Tensor q, at::Tensor k, at::Tensor cos_sin) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.stride(2) == 1 && k.stride(2) == 1, "q, k: [tokens, heads, dim]");
  TORCH_CHECK(q.stride(1) == q.size(2) && k.stride(1) == k.size(2), "heads of a token must be contiguous");
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "q and k must share a dtype");
  TORCH_CHECK(cos_sin.scalar_type() == at::kFloat && cos_sin.is_contiguous() && cos_sin.size(1) == q.size(2),
              "cos_sin must be contiguous fp32 [tokens, head_dim]");
  const int64_t head_dim = q.size(2), half = head_dim / 2;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "rotary_embedding", [&] {
    at::parallel_for(0, q.size(0), kRowsPerTask, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* cos = cos_sin.data_ptr<float>() + t * head_dim;
        rotate_heads(q.data_ptr<scalar_t>() + t * q.stride(0), q.stride(0), q.size(1), head_dim, cos, cos + half);
        rotate_heads(k.data_ptr<scalar_t>() + t * k.stride(0), k.stride(0), k.size(1), head_dim, cos, cos + half);
      }
    });
  });
}

}  // namespace firebox


TORCH_LIBRARY_FRAGMENT(firebox, m) {
  m.def("rms_norm(Tensor(a!) out, Tensor x, Tensor weight, float eps) -> ()");
  m.def("fused_add_rms_norm(Tensor(a!) x, Tensor(b!) residual, Tensor weight, float eps) -> ()");
  m.def("silu_and_mul(Tensor(a!) out, Tensor x) -> ()");
  m.def("rotary_embedding(Tensor(a!) q, Tensor(b!) k, Tensor cos_sin) -> ()");
}

TORCH_LIBRARY_IMPL(firebox, CPU, m) {
  m.impl("rms_norm", &firebox::rms_norm);
  m.impl("fused_add_rms_norm", &firebox::fused_add_rms_norm);
  m.impl("silu_and_mul", &firebox::silu_and_mul);
  m.impl("rotary_embedding", &firebox::rotary_embedding);
}
