"""The dense gated MLP (SwiGLU) with one fused gate|up projection."""

from __future__ import annotations

import torch
from torch import nn

from firebox.kernels import has_native_op
from firebox.models.layers.activation import silu_and_mul
from firebox.models.layers.linear import Linear


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_up_proj = Linear(
            hidden_size, (intermediate_size, intermediate_size), bias=bias, dtype=dtype
        )
        self.down_proj = Linear(intermediate_size, hidden_size, bias=bias, dtype=dtype)
        self.native = self.down_proj.weight.device.type == "cpu" and has_native_op("silu_and_mul")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, hidden]
        return self.down_proj(silu_and_mul(self.gate_up_proj(x), self.native))
