"""The one linear layer every model uses, so that a quantized kernel can replace it in one place.

A layer may fuse several projections along its output axis (q|k|v, gate|up); `output_sizes`
records the parts so that `load_weights` can copy each Hugging Face tensor into its rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int | Sequence[int],
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        sizes = (out_features,) if isinstance(out_features, int) else tuple(out_features)
        self.in_features = in_features
        self.output_sizes = sizes
        self.weight = nn.Parameter(torch.empty(sum(sizes), in_features, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(sum(sizes), dtype=dtype), requires_grad=False) if bias else None
        # A faster kernel over a repacked copy of the weight (models/layers/quant.py), set after loading.
        self.kernel: Callable[[torch.Tensor], torch.Tensor] | None = None

    def weight_part_sizes(self) -> dict[str, tuple[int, ...]]:
        """Row sizes of the fused parts of each parameter (for the weight loader)."""
        parts = {"weight": self.output_sizes}
        if self.bias is not None:
            parts["bias"] = self.output_sizes
        return parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, out]
        if self.kernel is not None:
            return self.kernel(x)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.output_sizes}, bias={self.bias is not None}"
