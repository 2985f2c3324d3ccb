"""Weight kernels for `Linear`: the checkpoint's 4- or 8-bit weights, multiplied as they are.

firebox's group kernels (`kernels/csrc/group_matmul.cpp`) keep each weight in its 4- or 8-bit grid
with one scale (and for 4-bit one offset) per group of 32 inputs, quantize the activations per
group on entry (to int16; 4-bit weights take int8 ones when `activation_bits` is 8, as
`--quantization fast` sets it), and multiply with integer instructions: one kernel for every
number of rows, whose result for a row never depends on the other rows of the step (batch
invariance).
Where the native kernels did not build, 4-bit weights fall back to torch's tinygemm int4 kernel
for small steps (`BatchAdaptiveKernel`, with a dense matmul for large ones).

Grids: q4 is w = scale * q + low per group of 32 input columns (GGUF Q4_1's grid, so Q4_0/Q4_1
weights repack without loss); q8 is w = scale * q (GGUF Q8_0's grid). Scales and offsets are fp16,
as GGUF stores them: a quarter of the bytes a 4-bit weight reads per step went to fp32 ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from firebox.kernels import has_native_op
from firebox.loader.quantized import QuantizedTensor

GROUP_SIZE = 32
COLUMN_BLOCK = 16  # output columns per SIMD register in the native layout
SMALLEST_SCALE = 2.0**-24  # fp16's smallest subnormal: a constant group's scale
MatMul = Callable[[torch.Tensor], torch.Tensor]  # [n, in] -> [n, out]


def _groups(weight: torch.Tensor) -> torch.Tensor:  # [out, in] -> [out, in / 32, 32]
    out_features, in_features = weight.shape
    if in_features % GROUP_SIZE:
        raise ValueError(f"in_features {in_features} is not a multiple of {GROUP_SIZE}")
    return weight.float().view(out_features, in_features // GROUP_SIZE, GROUP_SIZE)


def _column_blocks(t: torch.Tensor) -> torch.Tensor:
    """[out, ...] -> [out / 16, 16, ...], zero-padding out to a multiple of 16."""
    pad = -t.shape[0] % COLUMN_BLOCK
    if pad:
        t = torch.cat((t, t.new_zeros(pad, *t.shape[1:])))
    return t.view(-1, COLUMN_BLOCK, *t.shape[1:])


def _per_group(v: torch.Tensor) -> torch.Tensor:  # [out, groups] -> [out / 16, groups, 16]
    return _column_blocks(v).transpose(1, 2).contiguous()


def _pairs(q: torch.Tensor) -> torch.Tensor:  # [out, groups, 32] -> [out / 16, groups, 16 pairs, 16, 2]
    blocks = _column_blocks(q)  # [nb, 16, groups, 32]
    return blocks.view(*blocks.shape[:3], GROUP_SIZE // 2, 2).permute(0, 2, 3, 1, 4).contiguous()


def _has_packing_ops() -> bool:
    """The packing ops are 20x faster than the torch reference below (load time)."""
    return has_native_op("pack_q4")


@dataclass(slots=True)
class Q4Grid:
    """w = scale * q + low per group of 32: q [out, in / 32, 32] uint8 in 0..15."""

    q: torch.Tensor
    scale: torch.Tensor  # [out, in / 32] fp32 values that fp16 holds exactly
    low: torch.Tensor  # [out, in / 32] likewise


def _fp16_exact(v: torch.Tensor) -> torch.Tensor:
    return v.half().float()


def q4_grid(weight: torch.Tensor) -> Q4Grid:
    """Asymmetric 4-bit per group of 32: each group's min and max span the 16 levels. The offset
    and scale are rounded to fp16 before the levels are chosen, so the levels fit them."""
    groups = _groups(weight)
    low = _fp16_exact(groups.amin(-1))
    scale = _fp16_exact(((groups.amax(-1) - low) / 15).clamp(min=SMALLEST_SCALE))
    q = ((groups - low[..., None]) * (1 / scale)[..., None]).round().clamp(0, 15).to(torch.uint8)
    return Q4Grid(q, scale, low)


@dataclass(slots=True)
class Q4Weight:
    packed: torch.Tensor  # [out / 16, in / 32, 4 quads, 16 columns] int32: see group_matmul.cpp
    scale: torch.Tensor  # [out / 16, in / 32, 16] fp16
    low: torch.Tensor  # [out / 16, in / 32, 16] fp16
    out_features: int
    activation_bits: int = 16  # 8: twice the products per instruction, a coarser rounding of x

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.firebox.q4_matmul(
            x.float(), self.packed, self.scale, self.low, self.out_features, self.activation_bits
        )
        return out.to(x.dtype)

    def rows(self, start: int, stop: int) -> Q4Weight:
        """Output rows start..stop (multiples of 16), sharing this weight's memory."""
        blocks = _column_block_slice(start, stop)
        return Q4Weight(self.packed[blocks], self.scale[blocks], self.low[blocks], stop - start, self.activation_bits)


@dataclass(slots=True)
class Q8Weight:
    packed: torch.Tensor  # [out / 16, in / 32, 16 pairs, 16 columns, 2] int8
    scale: torch.Tensor  # [out / 16, in / 32, 16] fp16
    out_features: int

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.firebox.q8_matmul(x.float(), self.packed, self.scale, self.out_features).to(x.dtype)

    def rows(self, start: int, stop: int) -> Q8Weight:
        """Output rows start..stop (multiples of 16), sharing this weight's memory."""
        blocks = _column_block_slice(start, stop)
        return Q8Weight(self.packed[blocks], self.scale[blocks], stop - start)


def _column_block_slice(start: int, stop: int) -> slice:
    """The column blocks of output rows start..stop (the last one may be padding-filled)."""
    return slice(start // COLUMN_BLOCK, -(-stop // COLUMN_BLOCK))


def empty_q4(out_features: int, in_features: int, activation_bits: int = 16) -> Q4Weight:
    """An unfilled q4 weight, for the native packers to write (whole, or part by part)."""
    blocks, groups = -(-out_features // COLUMN_BLOCK), in_features // GROUP_SIZE
    return Q4Weight(
        torch.empty(blocks, groups, 4, COLUMN_BLOCK, dtype=torch.int32),
        torch.empty(blocks, groups, COLUMN_BLOCK, dtype=torch.float16),
        torch.empty(blocks, groups, COLUMN_BLOCK, dtype=torch.float16),
        out_features,
        activation_bits,
    )


def empty_q8(out_features: int, in_features: int) -> Q8Weight:
    blocks, groups = -(-out_features // COLUMN_BLOCK), in_features // GROUP_SIZE
    return Q8Weight(
        torch.empty(blocks, groups, GROUP_SIZE // 2, 2 * COLUMN_BLOCK, dtype=torch.int8),
        torch.empty(blocks, groups, COLUMN_BLOCK, dtype=torch.float16),
        out_features,
    )


def quantize_q4(weight: torch.Tensor, activation_bits: int = 16, out: Q4Weight | None = None) -> Q4Weight:
    """`weight` on the q4 grid, in the native layout, to multiply int16 (or int8) activations;
    written into `out` if given (native packers only)."""
    if _has_packing_ops():
        out = out if out is not None else empty_q4(*weight.shape, activation_bits)
        torch.ops.firebox.pack_q4(weight, out.packed, out.scale, out.low)
        return out
    return dataclasses.replace(pack_q4_reference(weight), activation_bits=activation_bits)


def pack_q4_blocks(tensor: QuantizedTensor, activation_bits: int = 16, out: Q4Weight | None = None) -> Q4Weight:
    """A GGUF matrix of a type in `NATIVE_BLOCK_TYPES` in the native q4 layout, without a float
    pass over the whole matrix: a 4-bit grid's levels (Q4_0, Q4_1, Q4_K) are copied as they are,
    other types are decoded a row at a time and gridded as `quantize_q4(tensor.dense())` would."""
    out = out if out is not None else empty_q4(*tensor.shape, activation_bits)
    raw, qtype = tensor.raw, int(tensor.ggml_type)
    torch.ops.firebox.pack_q4_gguf(raw, qtype, *tensor.shape, _order(tensor), out.packed, out.scale, out.low)
    return out


def pack_q8_blocks(tensor: QuantizedTensor, out: Q8Weight | None = None) -> Q8Weight:
    """`quantize_q8(tensor.dense())`, bit for bit, decoding the blocks a row at a time."""
    out = out if out is not None else empty_q8(*tensor.shape)
    torch.ops.firebox.pack_q8_gguf(tensor.raw, int(tensor.ggml_type), *tensor.shape, _order(tensor), out.packed, out.scale)
    return out


def _order(tensor: QuantizedTensor) -> torch.Tensor:
    return tensor.row_order if tensor.row_order is not None else torch.empty(0, dtype=torch.long)


def quantize_q8(weight: torch.Tensor, out: Q8Weight | None = None) -> Q8Weight:
    """`weight` on the q8 grid (symmetric 8-bit per group of 32), in the native layout; written
    into `out` if given (native packers only)."""
    if _has_packing_ops():
        out = out if out is not None else empty_q8(*weight.shape)
        torch.ops.firebox.pack_q8(weight, out.packed, out.scale)
        return out
    return pack_q8_reference(weight)


def pack_q4_reference(weight: torch.Tensor) -> Q4Weight:
    """quantize_q4 in torch ops: what the native packing op must reproduce bit for bit."""
    grid = q4_grid(weight)
    out_features, groups = grid.scale.shape
    # byte b of quad u holds level 8u+b in its low nibble and level 8u+4+b in its high one
    levels = grid.q.view(out_features, groups, 4, 2, 4).to(torch.int32)  # [out, groups, u, nibble, b]
    shifts = 4 * torch.arange(2, dtype=torch.int32)[:, None] + 8 * torch.arange(4, dtype=torch.int32)
    quads = (levels << shifts).sum((-2, -1), dtype=torch.int32)  # [out, groups, 4]: disjoint bits
    packed = _column_blocks(quads).permute(0, 2, 3, 1).contiguous()  # [out / 16, groups, 4, 16]
    return Q4Weight(packed, _per_group(grid.scale).half(), _per_group(grid.low).half(), out_features)


def pack_q8_reference(weight: torch.Tensor) -> Q8Weight:
    groups = _groups(weight)
    scale = _fp16_exact((groups.abs().amax(-1) / 127).clamp(min=SMALLEST_SCALE))
    q = (groups * (1 / scale)[..., None]).round().clamp(-127, 127).to(torch.int8)
    pairs = _pairs(q)  # [nb, groups, 16 pairs, 16, 2]
    return Q8Weight(pairs.reshape(*pairs.shape[:3], -1), _per_group(scale).half(), weight.shape[0])


GroupWeight = Q4Weight | Q8Weight


@dataclass(slots=True)
class TinyGemmInt4Weight:
    """torch's own 4-bit kernel (tinygemm): w = (q - 8) * scale + zero; same grid as Q4Weight."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [in / 32, out, 2]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, GROUP_SIZE, self.scales_zeros)


def quantize_tinygemm_int4(weight: torch.Tensor) -> TinyGemmInt4Weight:
    grid = q4_grid(weight)
    q = grid.q.reshape(weight.shape).to(torch.int32)
    zero = grid.low + 8 * grid.scale
    scales_zeros = torch.stack((grid.scale, zero), dim=-1).transpose(0, 1).contiguous()
    return TinyGemmInt4Weight(torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), scales_zeros)


class GroupKernel:
    """A group-quantized weight's matmul for every step size, plus the layer's bias."""

    def __init__(self, weight: GroupWeight, bias: torch.Tensor | None) -> None:
        self.weight = weight
        self.bias = bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, out]
        out = self.weight.matmul(x)
        return out if self.bias is None else out + self.bias


class BatchAdaptiveKernel:
    """A weight-only quantized matmul up to `max_small_rows` rows, a dense matmul beyond (the
    fallback where firebox's native kernels are unavailable)."""

    def __init__(
        self,
        small: MatMul,
        dense_weight: torch.Tensor | None,  # [out, in] in the dense dtype; None: `small` always
        bias: torch.Tensor | None,
        max_small_rows: int,
    ) -> None:
        self.small = small
        self.dense_weight = dense_weight
        self.bias = bias
        self.max_small_rows = max_small_rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, out]
        if self.dense_weight is None or x.shape[0] <= self.max_small_rows:
            out = self.small(x)
            return out if self.bias is None else out + self.bias
        dense = self.dense_weight
        bias = None if self.bias is None else self.bias.to(dense.dtype)
        return F.linear(x.to(dense.dtype), dense, bias).to(x.dtype)
