"""Gated activations applied to a fused gate|up projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_ACTIVATIONS = ("silu",)


def check_activation(name: str) -> None:
    if name not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; supported: {', '.join(SUPPORTED_ACTIVATIONS)}")


def silu_and_mul(gate_up: torch.Tensor, native: bool = False) -> torch.Tensor:  # [n, 2 * inter] -> [n, inter]
    if native and gate_up.dim() == 2 and gate_up.is_contiguous():
        out = torch.empty((gate_up.shape[0], gate_up.shape[1] // 2), dtype=gate_up.dtype)
        torch.ops.firebox.silu_and_mul(out, gate_up)
        return out
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
