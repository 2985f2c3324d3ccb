// The decoder layers of a Llama-family model run as one C++ call per step.
//
// At a few tokens per step the Python around each layer (module calls, views, dtype checks: some
// 80 dispatches a layer) costs as much as the arithmetic. DecoderStack holds the weights in the
// same forms the Python model uses (4/8-bit group weights, or the dense weight) and runs the same
// sequence of the same kernels: norm (residual add fused), fused qkv,
// rotary, KV write, paged attention (causal SDPA for fresh prompts), o, norm, gate|up, SiLU*up,
// down. firebox/models/native_stack.py builds it from a loaded model and checks that it applies.

#include <torch/custom_class.h>
#include <torch/extension.h>

#include <optional>
#include <vector>

#include "ops.h"

namespace {

struct StackLinear {
  int64_t bits = 0;               // 4 or 8: the group kernel; 0: the dense weight
  int64_t out_features = 0;
  int64_t activation_bits = 16;   // of a q4 layer: 8 or 16
  at::Tensor packed, scale, low;  // group weights (low: q4 only)
  at::Tensor dense;               // [out, in] fp32, when bits == 0
  at::Tensor bias;                // undefined when the layer has none

  at::Tensor operator()(const at::Tensor& x) const {
    if (bits == 0) return at::linear(x, dense, bias);
    at::Tensor out = bits == 4 ? firebox::q4_matmul(x, packed, scale, low, out_features, activation_bits)
                               : firebox::q8_matmul(x, packed, scale, out_features);
    return bias.defined() ? out.add_(bias) : out;
  }
};

struct StackLayer {
  at::Tensor input_norm, post_norm;
  StackLinear qkv, o, gate_up, down;
  int64_t window = 0;  // sliding window of this layer's attention; 0: none
};

class DecoderStack : public torch::CustomClassHolder {
 public:
  DecoderStack(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t block_size, double eps,
               double scale)
      : num_heads_(num_heads), num_kv_heads_(num_kv_heads), head_dim_(head_dim), block_size_(block_size),
        eps_(eps), scale_(scale) {}

  // As models/native_stack.py's NativeLayer.add_to lays them out:
  // tensors: input_norm, post_norm, then for qkv, o, gate_up, down: packed, scale, low, dense, bias
  // ints:    for qkv, o, gate_up, down: bits, out_features, has_bias, activation_bits; then the
  //          sliding window
  void add_layer(std::vector<at::Tensor> tensors, std::vector<int64_t> ints) {
    TORCH_CHECK(tensors.size() == 2 + 4 * 5 && ints.size() == 4 * 4 + 1, "add_layer: 22 tensors and 17 ints");
    StackLayer layer{tensors[0], tensors[1], {}, {}, {}, {}, ints[4 * 4]};
    StackLinear* linears[] = {&layer.qkv, &layer.o, &layer.gate_up, &layer.down};
    for (int i = 0; i < 4; ++i) {
      StackLinear& lin = *linears[i];
      const at::Tensor* t = &tensors[2 + 5 * i];
      lin.bits = ints[4 * i];
      lin.out_features = ints[4 * i + 1];
      lin.activation_bits = ints[4 * i + 3];
      lin.packed = t[0];
      lin.scale = t[1];
      lin.low = t[2];
      lin.dense = t[3];
      if (ints[4 * i + 2] != 0) lin.bias = t[4];
    }
    layers_.push_back(std::move(layer));
  }

  void set_final_norm(at::Tensor weight) { final_norm_ = weight; }

  void set_kv_caches(std::vector<at::Tensor> caches) {
    TORCH_CHECK(caches.size() == layers_.size(), "one KV tensor per layer");
    caches_ = std::move(caches);
  }

  // hidden [T, hidden] fp32 (the embeddings; used as the residual stream), cos_sin [T, head_dim] fp32.
  // Attention metadata as CpuPagedMetadata holds it; fresh [n, 2] token spans of fresh prompts;
  // paged_tokens empty when the paged tokens are the leading `num_paged` ones.
  at::Tensor forward(at::Tensor hidden, at::Tensor cos_sin, at::Tensor slot_mapping, at::Tensor block_table,
                     at::Tensor token_row, at::Tensor kv_len, int64_t num_paged, at::Tensor paged_tokens,
                     at::Tensor fresh) {
    TORCH_CHECK(caches_.size() == layers_.size() && final_norm_.defined(), "DecoderStack is not complete");
    at::Tensor residual;
    for (size_t l = 0; l < layers_.size(); ++l) {
      const StackLayer& layer = layers_[l];
      if (l == 0) {
        residual = hidden;
        hidden = at::empty_like(residual);
        firebox::rms_norm(hidden, residual, layer.input_norm, eps_);
      } else {
        firebox::fused_add_rms_norm(hidden, residual, layer.input_norm, eps_);
      }
      const at::Tensor attn = attention(layer.qkv(hidden), l, cos_sin, slot_mapping, block_table, token_row, kv_len,
                                        num_paged, paged_tokens, fresh, layer.window);
      hidden = layer.o(attn);
      firebox::fused_add_rms_norm(hidden, residual, layer.post_norm, eps_);
      const at::Tensor gate_up = layer.gate_up(hidden);
      at::Tensor act = at::empty({gate_up.size(0), gate_up.size(1) / 2}, gate_up.options());
      firebox::silu_and_mul(act, gate_up);
      hidden = layer.down(act);
    }
    firebox::fused_add_rms_norm(hidden, residual, final_norm_, eps_);
    return hidden;
  }

 private:
  at::Tensor attention(const at::Tensor& qkv, size_t layer, const at::Tensor& cos_sin, const at::Tensor& slots,
                       const at::Tensor& block_table, const at::Tensor& token_row, const at::Tensor& kv_len,
                       int64_t num_paged, const at::Tensor& paged_tokens, const at::Tensor& fresh, int64_t window) {
    const int64_t T = qkv.size(0), H = num_heads_, KV = num_kv_heads_, D = head_dim_;
    const at::Tensor qkv3 = qkv.view({T, H + 2 * KV, D});
    const at::Tensor q = qkv3.narrow(1, 0, H), k = qkv3.narrow(1, H, KV), v = qkv3.narrow(1, H + KV, KV);
    firebox::rotary_embedding(q, k, cos_sin);
    const at::Tensor& cache = caches_[layer];  // [2, num_blocks, KV * D * block_size]
    const int64_t num_blocks = cache.size(1);
    const at::Tensor k_pool = cache[0].view({num_blocks, KV, D, block_size_});
    const at::Tensor v_pool = cache[1].view({num_blocks, KV, block_size_, D});
    firebox::write_kv(k, v, k_pool, v_pool, slots);
    at::Tensor out = at::empty({T, H, D}, qkv.options());
    if (num_paged > 0) {
      if (paged_tokens.numel() == 0) {
        firebox::paged_attention(out.narrow(0, 0, num_paged), q.narrow(0, 0, num_paged), k_pool, v_pool,
                                 block_table, token_row, kv_len, scale_, window);
      } else {
        at::Tensor part = at::empty({num_paged, H, D}, qkv.options());
        firebox::paged_attention(part, q.index_select(0, paged_tokens), k_pool, v_pool, block_table, token_row,
                                 kv_len, scale_, window);
        out.index_copy_(0, paged_tokens, part);
      }
    }
    const int64_t* spans = fresh.data_ptr<int64_t>();
    for (int64_t i = 0; i < fresh.size(0); ++i) {
      const int64_t s = spans[2 * i], n = spans[2 * i + 1] - spans[2 * i];
      const bool windowed = window > 0 && n > window;  // else plain causal: the window covers the span
      const std::optional<at::Tensor> mask =
          windowed ? std::optional<at::Tensor>(at::ones({n, n}, qkv.options().dtype(at::kBool)).tril().triu(1 - window))
                   : std::nullopt;
      const at::Tensor o = at::scaled_dot_product_attention(
          q.narrow(0, s, n).transpose(0, 1).unsqueeze(0), k.narrow(0, s, n).transpose(0, 1).unsqueeze(0),
          v.narrow(0, s, n).transpose(0, 1).unsqueeze(0), mask, 0.0, /*is_causal=*/!windowed, scale_,
          /*enable_gqa=*/true);
      out.narrow(0, s, n).copy_(o[0].transpose(0, 1));
    }
    return out.view({T, H * D});
  }

  int64_t num_heads_, num_kv_heads_, head_dim_, block_size_;
  double eps_, scale_;
  std::vector<StackLayer> layers_;
  at::Tensor final_norm_;
  std::vector<at::Tensor> caches_;
};

}  // namespace

TORCH_LIBRARY_FRAGMENT(firebox, m) {
  m.class_<DecoderStack>("DecoderStack")
      .def(torch::init<int64_t, int64_t, int64_t, int64_t, double, double>())
      .def("add_layer", &DecoderStack::add_layer)
      .def("set_final_norm", &DecoderStack::set_final_norm)
      .def("set_kv_caches", &DecoderStack::set_kv_caches)
      .def("forward", &DecoderStack::forward);
}
