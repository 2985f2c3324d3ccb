// GGML block fields shared by the dequantizer (gguf_dequant.cpp) and the packers that read GGUF
// blocks (group_matmul.cpp): ggml's own reading of them (`ggml-quants.c`), including the 4-bit
// grids' levels, scale and offset, which both read the same way, and the row decoder the packers
// use for every other type.
#pragma once

#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

namespace firebox::gguf {

// ggml's GGMLQuantizationType values
enum Type : int64_t { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

constexpr int64_t QK_K = 256;  // values per K-quant super-block

inline float half_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block's 12 scale bytes.
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Group g (of 32 values) of a row of Q4_0, Q4_1 or Q4_K blocks as firebox's four q4 quad words
// (byte b of quad u: level 8u+b in its low nibble, 8u+4+b in its high one; group_matmul.cpp), a
// scale and an offset: w = scale * level + low, the same float operations as ggml's
// dequantization (Q4_0: d * (q - 8) = d * q - 8 d exactly; Q4_K: d1 * q - m1 with d1 = d * sc,
// m1 = dmin * m). The nibbles move a word at a time: this is most of loading a 4-bit file.
inline void q4_group_quads(int64_t type, const uint8_t* row, int64_t g, uint32_t* quads, float* scale, float* low) {
  // quads[0 .. count) from the 8 * count levels in the low nibbles (high = false) or the high ones of q[0 .. 8 count)
  const auto nibble_quads = [](const uint8_t* q, bool high, uint32_t* out, int count) {
    for (int u = 0; u < count; ++u) {
      const uint32_t a = load_u32(q + 8 * u), b = load_u32(q + 8 * u + 4);
      out[u] = high ? ((a >> 4) & 0x0F0F0F0Fu) | (b & 0xF0F0F0F0u) : (a & 0x0F0F0F0Fu) | ((b & 0x0F0F0F0Fu) << 4);
    }
  };
  if (type == Q4_0 || type == Q4_1) {  // d (· m) · qs[16]: level j in the low nibble of qs[j], 16 + j in the high
    const bool q4_1 = type == Q4_1;
    const uint8_t* b = row + g * (q4_1 ? 20 : 18);
    const float d = half_at(b);
    const uint8_t* qs = b + (q4_1 ? 4 : 2);
    nibble_quads(qs, false, quads, 2);
    nibble_quads(qs, true, quads + 2, 2);
    *scale = d;
    *low = q4_1 ? half_at(b + 2) : -8.f * d;
    return;
  }
  // Q4_K: d · dmin · scales[12] · qs[128]; sub-block j: the low (j even) or high nibbles of qs[32 (j/2) ...]
  const uint8_t* b = row + (g / 8) * 144;
  const int sub = static_cast<int>(g % 8);
  uint8_t sc, m;
  scale_min_k4(sub, b + 4, &sc, &m);
  nibble_quads(b + 16 + 32 * (sub / 2), sub % 2 == 1, quads, 4);
  *scale = half_at(b) * sc;
  *low = -(half_at(b + 2) * m);
}

// The same group as its 32 levels 0..15.
inline void q4_group(int64_t type, const uint8_t* row, int64_t g, uint32_t* levels, float* scale, float* low) {
  uint32_t quads[4];
  q4_group_quads(type, row, g, quads, scale, low);
  for (int u = 0; u < 4; ++u)
    for (int b = 0; b < 4; ++b) {
      levels[8 * u + b] = (quads[u] >> (8 * b)) & 0x0F;
      levels[8 * u + 4 + b] = (quads[u] >> (8 * b + 4)) & 0x0F;
    }
}

// Any type the dequantizer knows (gguf_dequant.cpp): values and bytes per block, and one row of
// K values decoded to fp32 exactly as `dequantize_gguf` decodes it. False / no-op for other types.
bool block_layout(int64_t type, int64_t* block_size, int64_t* type_size);
void dequantize_row(int64_t type, const uint8_t* row, int64_t K, float* out);

}  // namespace firebox::gguf
