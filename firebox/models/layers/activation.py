"""Gated activations applied to a fused gate|up projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_ACTIVATIONS = ("silu",)


def check_activation(name: str) -> None:
    if name not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; supported: {', '.join(SUPPORTED_ACTIVATIONS)}")


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:  # [n, 2 * inter] -> [n, inter]
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
