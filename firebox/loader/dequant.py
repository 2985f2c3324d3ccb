"""GGML block dequantization in vectorized torch.

Each quantized type stores fixed-size blocks of `type_size` bytes that decode to `block_size`
values; a dequantizer maps `[num_blocks, type_size]` uint8 to `[num_blocks, block_size]` float32
with whole-tensor ops (no Python loop over blocks). The byte layouts and the order of float
operations follow ggml's reference (`ggml-quants.c`, mirrored by `gguf.quants`), so results are
bit-exact with it. Where firebox's native kernels are loaded, the common types decode in C++
(`kernels/csrc/gguf_dequant.cpp`, the same values); this module is their reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from firebox.kernels import has_native_op
from firebox.loader.quantized import NATIVE_BLOCK_TYPES

QK_K = 256  # values per K-quant super-block
_CHUNK_VALUES = 1 << 21  # values decoded per step (8 MB of float32)

_NATIVE_DTYPES = {
    GGMLQuantizationType.F32: torch.float32,
    GGMLQuantizationType.F16: torch.float16,
    GGMLQuantizationType.BF16: torch.bfloat16,
}


def decode_tensor(raw: torch.Tensor, ggml_type: GGMLQuantizationType, shape: tuple[int, ...]) -> torch.Tensor:
    """A GGUF tensor as torch: float types keep their dtype (copied out of the file mapping),
    quantized ones are dequantized to float32. `shape` is in torch order."""
    dtype = _NATIVE_DTYPES.get(ggml_type)
    if dtype is not None:
        return raw.view(dtype).reshape(shape).clone()
    return dequantize(raw, ggml_type).reshape(shape)


def dequantize(raw: torch.Tensor, ggml_type: GGMLQuantizationType) -> torch.Tensor:
    """Flat uint8 bytes of `ggml_type` -> flat float32 values."""
    if ggml_type in _NATIVE_DTYPES:
        return raw.view(_NATIVE_DTYPES[ggml_type]).to(torch.float32)
    if ggml_type in NATIVE_BLOCK_TYPES and has_native_op("dequantize_gguf"):  # the same values, ~10x faster
        return torch.ops.firebox.dequantize_gguf(raw.contiguous(), int(ggml_type))
    dequantizer = _DEQUANTIZERS.get(ggml_type)
    if dequantizer is None:
        supported = ", ".join(t.name for t in (*_NATIVE_DTYPES, *_DEQUANTIZERS))
        raise ValueError(f"GGUF tensor type {ggml_type.name} is not supported (supported: {supported})")
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    blocks = raw.reshape(-1, type_size)
    out = torch.empty(blocks.shape[0], block_size, dtype=torch.float32)
    # Chunks keep the temporaries cache-sized and reused: decoding a whole tensor at once pays
    # for fresh pages of several full-size intermediates and runs about 3x slower.
    step = max(1, _CHUNK_VALUES // block_size)
    for start in range(0, blocks.shape[0], step):
        out[start : start + step] = dequantizer(blocks[start : start + step])
    return out.reshape(-1)


# --- byte-field helpers ----------------------------------------------------------------------


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """One fp16 field per block at byte `start`, as float32."""
    return blocks[:, start : start + 2].view(torch.float16).to(torch.float32)  # [num_blocks, 1]


def _planes(packed: torch.Tensor, shifts: tuple[int, ...], mask: int) -> torch.Tensor:
    """Split packed bit fields: `[nb, groups, width]` -> `[nb, groups * len(shifts), width]`, plane
    k of group g holding `(packed[:, g] >> shifts[k]) & mask` (ggml's packing order)."""
    shift = torch.tensor(shifts, dtype=torch.uint8).view(1, 1, -1, 1)
    fields = (packed.unsqueeze(2) >> shift) & mask  # [nb, groups, len(shifts), width]
    return fields.reshape(packed.shape[0], -1, packed.shape[-1])


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """`[nb, n]` bytes -> `[nb, 2n]`: all low nibbles, then all high nibbles."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def _high_bits_32(qh: torch.Tensor) -> torch.Tensor:
    """The 32-bit little-endian `qh` word of Q5_0/Q5_1 (`[nb, 4]` bytes) -> `[nb, 32]` bits."""
    return _planes(qh.unsqueeze(-1), tuple(range(8)), 1).reshape(qh.shape[0], 32)


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 bytes of 6-bit scales and mins shared by Q4_K/Q5_K -> two `[nb, 8]` float32."""
    d, m, m_d = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = torch.cat((d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)), dim=-1)
    mn = torch.cat((m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)), dim=-1)
    return sc.to(torch.float32), mn.to(torch.float32)


# --- 32-value blocks ---------------------------------------------------------------------------


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:  # d:f16 · qs:int8[32]
    return blocks[:, 2:34].view(torch.int8).to(torch.float32).mul_(_half(blocks, 0))


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:  # d · qs:u8[16] (two 4-bit values each, offset 8)
    q = _nibbles(blocks[:, 2:18]).to(torch.float32).sub_(8)
    return q.mul_(_half(blocks, 0))


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:  # d · m · qs:u8[16]
    q = _nibbles(blocks[:, 4:20]).to(torch.float32)
    return q.mul_(_half(blocks, 0)).add_(_half(blocks, 2))


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:  # d · qh:u32 · qs:u8[16] (5-bit, offset 16)
    q = _nibbles(blocks[:, 6:22]) | (_high_bits_32(blocks[:, 2:6]) << 4)
    return q.to(torch.float32).sub_(16).mul_(_half(blocks, 0))


def _q5_1(blocks: torch.Tensor) -> torch.Tensor:  # d · m · qh:u32 · qs:u8[16]
    q = _nibbles(blocks[:, 8:24]) | (_high_bits_32(blocks[:, 4:8]) << 4)
    return q.to(torch.float32).mul_(_half(blocks, 0)).add_(_half(blocks, 2))


# --- 256-value K-quant super-blocks -------------------------------------------------------------


def _q2_k(blocks: torch.Tensor) -> torch.Tensor:  # scales:u8[16] · qs:u8[64] · d · dmin
    nb = blocks.shape[0]
    scales = blocks[:, 0:16]
    dl = (_half(blocks, 80) * (scales & 0x0F).to(torch.float32)).unsqueeze(-1)  # [nb, 16, 1]
    ml = (_half(blocks, 82) * (scales >> 4).to(torch.float32)).unsqueeze(-1)
    q = _planes(blocks[:, 16:80].reshape(nb, 2, 32), (0, 2, 4, 6), 3).reshape(nb, 16, 16)
    return (dl * q.to(torch.float32) - ml).reshape(nb, QK_K)


def _q3_k(blocks: torch.Tensor) -> torch.Tensor:  # hmask:u8[32] · qs:u8[64] · scales:u8[12] · d
    nb = blocks.shape[0]
    scales = blocks[:, 96:108]
    low = _planes(scales[:, :8].unsqueeze(1), (0, 4), 0x0F).reshape(nb, 16)
    high = _planes(scales[:, 8:].unsqueeze(1), (0, 2, 4, 6), 3).reshape(nb, 16)
    sc = (low | (high << 4)).to(torch.float32) - 32
    dl = (_half(blocks, 108) * sc).unsqueeze(-1)  # [nb, 16, 1]
    ql = _planes(blocks[:, 32:96].reshape(nb, 2, 32), (0, 2, 4, 6), 3).reshape(nb, 16, 16)
    qh = _planes(blocks[:, 0:32].unsqueeze(1), tuple(range(8)), 1).reshape(nb, 16, 16)
    q = ql.to(torch.int8) - ((qh ^ 1) << 2).to(torch.int8)  # a clear hmask bit subtracts 4
    return (dl * q.to(torch.float32)).reshape(nb, QK_K)


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:  # d · dmin · scales:u8[12] · qs:u8[128]
    nb = blocks.shape[0]
    sc, mn = _k_scale_min(blocks[:, 4:16])
    d = (_half(blocks, 0) * sc).unsqueeze(-1)  # [nb, 8, 1]
    dm = (_half(blocks, 2) * mn).unsqueeze(-1)
    q = _planes(blocks[:, 16:144].reshape(nb, 4, 32), (0, 4), 0x0F)  # [nb, 8, 32]
    return (d * q.to(torch.float32) - dm).reshape(nb, QK_K)


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:  # d · dmin · scales:u8[12] · qh:u8[32] · qs:u8[128]
    nb = blocks.shape[0]
    sc, mn = _k_scale_min(blocks[:, 4:16])
    d = (_half(blocks, 0) * sc).unsqueeze(-1)  # [nb, 8, 1]
    dm = (_half(blocks, 2) * mn).unsqueeze(-1)
    ql = _planes(blocks[:, 48:176].reshape(nb, 4, 32), (0, 4), 0x0F)  # [nb, 8, 32]
    qh = _planes(blocks[:, 16:48].unsqueeze(1), tuple(range(8)), 1)  # [nb, 8, 32]
    q = (ql | (qh << 4)).to(torch.float32)
    return (d * q - dm).reshape(nb, QK_K)


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:  # ql:u8[128] · qh:u8[64] · scales:i8[16] · d
    nb = blocks.shape[0]
    scales = blocks[:, 192:208].view(torch.int8).to(torch.float32)
    d = (_half(blocks, 208) * scales).unsqueeze(-1)  # [nb, 16, 1]
    ql = _planes(blocks[:, 0:128].reshape(nb, 2, 64), (0, 4), 0x0F).reshape(nb, 8, 32)
    qh = _planes(blocks[:, 128:192].reshape(nb, 2, 32), (0, 2, 4, 6), 3)  # [nb, 8, 32]
    q = (ql | (qh << 4)).to(torch.int8) - 32
    return (d * q.reshape(nb, 16, 16).to(torch.float32)).reshape(nb, QK_K)


_DEQUANTIZERS: dict[GGMLQuantizationType, Callable[[torch.Tensor], torch.Tensor]] = {
    GGMLQuantizationType.Q8_0: _q8_0,
    GGMLQuantizationType.Q4_0: _q4_0,
    GGMLQuantizationType.Q4_1: _q4_1,
    GGMLQuantizationType.Q5_0: _q5_0,
    GGMLQuantizationType.Q5_1: _q5_1,
    GGMLQuantizationType.Q2_K: _q2_k,
    GGMLQuantizationType.Q3_K: _q3_k,
    GGMLQuantizationType.Q4_K: _q4_k,
    GGMLQuantizationType.Q5_K: _q5_k,
    GGMLQuantizationType.Q6_K: _q6_k,
}
