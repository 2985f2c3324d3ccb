// The kernels' C++ entry points, shared by the registered torch ops and the fused decoder stack.
#pragma once

#include <ATen/ATen.h>


namespace firebox {

at::Tensor q4_matmul(at::Tensor x, at::Tensor packed, at::Tensor scale, at::Tensor low, int64_t N,
                     int64_t activation_bits);
at::Tensor q8_matmul(at::Tensor x, at::Tensor packed, at::Tensor scale, int64_t N);
void paged_attention(at::Tensor out, at::Tensor q, at::Tensor k_pool, at::Tensor v_pool, at::Tensor block_table,
                     at::Tensor token_row, at::Tensor kv_len, double scale, int64_t window);
void write_kv(at::Tensor k, at::Tensor v, at::Tensor k_pool, at::Tensor v_pool, at::Tensor slots);
void rms_norm(at::Tensor out, at::Tensor x, at::Tensor w, double eps);
void fused_add_rms_norm(at::Tensor x, at::Tensor residual, at::Tensor w, double eps);
void silu_and_mul(at::Tensor out, at::Tensor x);
void rotary_embedding(at::Tensor q, at::Tensor k, at::Tensor cos_sin);

}  // namespace firebox
