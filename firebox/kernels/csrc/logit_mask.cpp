// Constrained decoding's mask on a step's logits, in one pass: every token the grammar's bitmask
// does not allow becomes -inf, in the constrained rows only.
//
//   mask_disallowed_(logits, row_ids, bitmask)
//     logits  [n, vocab] fp32, edited in place
//     row_ids [k] int64: the logits row of each bitmask row
//     bitmask [k, words] int32: bit t % 32 of word t / 32 set = token t allowed; tokens past the
//             bitmask's width are disallowed
//
// The torch equivalent unpacks the bits into a [k, vocab] boolean tensor and masks through it,
// five dispatches and ~0.2 ms a step at one row of a 49k vocabulary; this is a few microseconds.

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace firebox {

void mask_disallowed_(at::Tensor logits, at::Tensor row_ids, at::Tensor bitmask) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat && logits.stride(1) == 1,
              "logits: fp32 [n, vocab] with contiguous rows");
  TORCH_CHECK(row_ids.dim() == 1 && row_ids.scalar_type() == at::kLong, "row_ids: int64 [k]");
  TORCH_CHECK(bitmask.dim() == 2 && bitmask.scalar_type() == at::kInt && bitmask.size(0) == row_ids.size(0),
              "bitmask: int32 [k, words]");
  const at::Tensor rows = row_ids.contiguous();
  const at::Tensor bits = bitmask.contiguous();
  const int64_t n = logits.size(0), vocab = logits.size(1), words = bits.size(1);
  const int64_t covered = std::min(vocab, words * 32);
  const int64_t* row = rows.data_ptr<int64_t>();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < rows.numel(); ++i) {
    TORCH_CHECK(row[i] >= 0 && row[i] < n, "row id ", row[i], " outside the ", n, " logits rows");
    float* out = logits.data_ptr<float>() + row[i] * logits.stride(0);
    const uint32_t* mask = reinterpret_cast<const uint32_t*>(bits.data_ptr<int32_t>()) + i * words;
    for (int64_t w = 0; w * 32 < covered; ++w) {
      uint32_t disallowed = ~mask[w];
      if (w * 32 + 32 > covered) disallowed &= (covered - w * 32 == 32) ? ~0u : ((1u << (covered - w * 32)) - 1);
      if (disallowed == ~0u) {  // most words of a grammar's mask are all-disallowed or all-allowed
        std::fill(out + w * 32, out + w * 32 + 32, kNegInf);
        continue;
      }
      while (disallowed) {
        out[w * 32 + __builtin_ctz(disallowed)] = kNegInf;
        disallowed &= disallowed - 1;
      }
    }
    for (int64_t t = covered; t < vocab; ++t) out[t] = kNegInf;
  }
}

}  // namespace firebox

TORCH_LIBRARY_FRAGMENT(firebox, m) { m.def("mask_disallowed_(Tensor(a!) logits, Tensor row_ids, Tensor bitmask) -> ()"); }

TORCH_LIBRARY_IMPL(firebox, CPU, m) { m.impl("mask_disallowed_", &firebox::mask_disallowed_); }
