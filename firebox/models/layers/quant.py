"""Weight kernels for `Linear`: which matmul runs depends on how many rows the step has.

A decode step with few requests is memory-bound (every weight byte is read once per step), so
the weight stays 4- or 8-bit and is widened in registers: firebox's native group kernels
(`engine/runner/csrc/group_gemv.cpp`), or torch's tinygemm int4 kernel where the native ones did
not build. A large step (prefill, big batches) is compute-bound: a dense matmul (bf16 where the
CPU has native bf16 dot products, else the model dtype) does more useful work per byte.
`BatchAdaptiveKernel` holds both forms of a weight and picks per call.

Grids: q4 is w = scale * q + low per group of 32 input columns (GGUF Q4_1's grid, so Q4_0/Q4_1
weights repack without loss); q8 is w = scale * q (GGUF Q8_0's grid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GROUP_SIZE = 32
MatMul = Callable[[torch.Tensor], torch.Tensor]  # [n, in] -> [n, out]


def _groups(weight: torch.Tensor) -> torch.Tensor:  # [out, in] -> [out, in / 32, 32]
    out_features, in_features = weight.shape
    if in_features % GROUP_SIZE:
        raise ValueError(f"in_features {in_features} is not a multiple of {GROUP_SIZE}")
    return weight.float().view(out_features, in_features // GROUP_SIZE, GROUP_SIZE)


@dataclass(slots=True)
class Q4Weight:
    packed: torch.Tensor  # [out, in / 2] uint8; in group g byte i = q[32g+i] | q[32g+16+i] << 4
    scale: torch.Tensor  # [out, in / 32] fp32
    low: torch.Tensor  # [out, in / 32] fp32

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.firebox.q4_gemv(x.float().contiguous(), self.packed, self.scale, self.low).to(x.dtype)


@dataclass(slots=True)
class Q8Weight:
    packed: torch.Tensor  # [out, in] int8
    scale: torch.Tensor  # [out, in / 32] fp32

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.firebox.q8_gemv(x.float().contiguous(), self.packed, self.scale).to(x.dtype)


def quantize_q4(weight: torch.Tensor) -> Q4Weight:
    """Asymmetric 4-bit per group of 32: each group's min and max span the 16 levels."""
    groups = _groups(weight)
    low = groups.amin(-1)
    scale = ((groups.amax(-1) - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
    half = GROUP_SIZE // 2
    packed = (q[..., :half] | (q[..., half:] << 4)).reshape(weight.shape[0], -1)
    return Q4Weight(packed.contiguous(), scale.contiguous(), low.contiguous())


def quantize_q8(weight: torch.Tensor) -> Q8Weight:
    """Symmetric 8-bit per group of 32."""
    groups = _groups(weight)
    scale = (groups.abs().amax(-1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = (groups / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
    return Q8Weight(q.reshape(weight.shape).contiguous(), scale.contiguous())


@dataclass(slots=True)
class TinyGemmInt4Weight:
    """torch's own 4-bit kernel (tinygemm): w = (q - 8) * scale + zero; same grid as Q4Weight."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [in / 32, out, 2]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, GROUP_SIZE, self.scales_zeros)


def quantize_tinygemm_int4(weight: torch.Tensor) -> TinyGemmInt4Weight:
    q4 = quantize_q4(weight)
    half = GROUP_SIZE // 2
    nibbles = torch.stack((q4.packed & 0x0F, q4.packed >> 4), dim=-1)  # [out, in/2, 2]
    groups = nibbles.view(weight.shape[0], -1, half, 2).transpose(-1, -2)  # [out, in/32, 2, 16]
    q = groups.reshape(weight.shape).to(torch.int32)
    zero = q4.low + 8 * q4.scale
    scales_zeros = torch.stack((q4.scale, zero), dim=-1).transpose(0, 1).contiguous()
    return TinyGemmInt4Weight(torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1), scales_zeros)


class BatchAdaptiveKernel:
    """A weight-only quantized matmul up to `max_small_rows` rows, a dense matmul beyond."""

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
