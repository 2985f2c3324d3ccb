"""RMSNorm as Hugging Face computes it: normalize in float32, cast back, then scale.

On CPU with firebox's native kernels each norm is one pass (`kernels/csrc/layer_ops.cpp`), and
`forward_add` fuses the residual add into it, as vLLM does.
"""

from __future__ import annotations

import torch
from torch import nn

from firebox.kernels import has_native_op


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype), requires_grad=False)
        self.native = self.weight.device.type == "cpu" and has_native_op("fused_add_rms_norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., hidden]
        if self.native and x.dim() == 2 and x.stride(-1) == 1:
            out = torch.empty(x.shape, dtype=x.dtype)
            torch.ops.firebox.rms_norm(out, x, self.weight, self.eps)
            return out
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

    def forward_add(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(residual + x), residual + x). The native path works in place on both inputs."""
        if self.native and x.is_contiguous() and residual.is_contiguous():
            torch.ops.firebox.fused_add_rms_norm(x, residual, self.weight, self.eps)
            return x, residual
        residual = residual + x
        return self(residual), residual

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
