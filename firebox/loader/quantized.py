"""A GGUF matrix still in its quantized blocks, for consumers that take them as they are.

The weight stream of a GGUF checkpoint hands block-quantized matrices over in this form: a sink
that packs quantized layers takes them from their blocks (`models/layers/quant.py`: 4-bit grids
copied as they are, other types decoded a row at a time while packing), and anything else asks
for `dense()`. Loading a 1B-parameter Q4_K_M model otherwise writes and reads back 4 GB of
float32 that it then throws away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from gguf import GGMLQuantizationType

if TYPE_CHECKING:  # torch is imported where weights are read, not where a model is described
    import torch

# The 4-bit block types whose grid is firebox's q4 grid (levels 0..15, a scale and an offset per 32)
Q4_GRID_TYPES = frozenset({GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q4_K})
# The block types firebox's native kernels decode (kernels/csrc/gguf_dequant.cpp) and pack from blocks
NATIVE_BLOCK_TYPES = Q4_GRID_TYPES | frozenset(
    GGMLQuantizationType[name] for name in ("Q5_0", "Q5_1", "Q8_0", "Q5_K", "Q6_K")
)


@dataclass(frozen=True, slots=True)
class QuantizedTensor:
    raw: torch.Tensor  # uint8: the GGUF bytes of the [rows, cols] matrix, row after row
    ggml_type: GGMLQuantizationType
    shape: torch.Size  # [rows, cols], torch order
    row_order: torch.Tensor | None = None  # int64 [rows]: the stored row of each model row, if reordered

    def dense(self) -> torch.Tensor:
        """float32 [rows, cols], rows in model order."""
        from firebox.loader.dequant import dequantize

        values = dequantize(self.raw, self.ggml_type).reshape(self.shape)
        return values if self.row_order is None else values[self.row_order]


WeightTensor: TypeAlias = "torch.Tensor | QuantizedTensor"


def dense(tensor: WeightTensor) -> torch.Tensor:
    """The tensor as float values, whichever form it came in."""
    return tensor.dense() if isinstance(tensor, QuantizedTensor) else tensor
