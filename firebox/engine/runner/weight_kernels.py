"""Chooses and installs the linear-layer kernels of a loaded model.

With firebox's native kernels (CPU), every linear layer keeps a 4- or 8-bit group-quantized
weight and one kernel serves every step, from a one-token decode to a long prefill
(`models/layers/quant.py`): the weight bytes read per decode step fall four- to eight-fold, the
products are integer instructions, and a row's result does not depend on the rest of the batch.

- `none`: dense in the model dtype (the reference numerics).
- `auto`: faithful to the checkpoint. Layers of a 4-bit GGUF stay 4-bit (q4 repacks Q4_0/Q4_1
  exactly), anything else 8-bit; the output projection (lm_head) is always 8-bit, since 4 bits
  there cost ~0.3 nats of log-probability. Activations go in as int16. Only on CPU.
- `fast`: `auto`, with int8 activations into the 4-bit layers (as llama.cpp multiplies): twice
  the products per instruction, so about twice the prefill and batched-decode speed, for a
  coarser rounding of x (the default model's prompt log-probabilities move 0.13 nats from
  transformers' on the same weights, against 0.001 with int16: measured on every subset of its
  layers, the cost is spread over all of them, so no per-layer choice keeps `auto`'s accuracy).
- `int4` / `int8`: every layer 4-bit (lm_head 8-bit) / everything 8-bit.
Without the native kernels, 4-bit layers fall back to torch's tinygemm kernel for steps of a few
rows and a dense matmul beyond; 8-bit weights stay dense.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from firebox.config import Quantization
from firebox.kernels import load_native
from firebox.kernels.cpu import cpu_has_native_bf16
from firebox.loader.quantized import QuantizedTensor, WeightTensor, dense
from firebox.models.layers.linear import Linear
from firebox.models.layers.quant import (
    COLUMN_BLOCK,
    GROUP_SIZE,
    BatchAdaptiveKernel,
    GroupKernel,
    GroupWeight,
    empty_q4,
    empty_q8,
    pack_q4_blocks,
    pack_q8_blocks,
    quantize_q4,
    quantize_q8,
    quantize_tinygemm_int4,
)

logger = logging.getLogger(__name__)

# Without native kernels: torch's tinygemm int4 up to this many rows, a dense matmul beyond.
FALLBACK_MAX_SMALL_ROWS = 3


def resolve_quantization(name: Quantization, device: torch.device) -> Quantization:
    """`ModelConfig` has checked the name; what is left is whether the device has the kernel."""
    if device.type != "cpu":
        if name in ("fast", "int4", "int8"):
            raise ValueError(f"quantization {name!r} is a CPU kernel; use 'none' on {device.type}")
        return "none"
    return name


def _bits_for(name: str, quantization: str, source_bits: int | None) -> int:
    """Weight bits of one linear layer."""
    if name.endswith("lm_head") or quantization == "int8":
        return 8
    if quantization == "int4":
        return 4
    return 4 if source_bits is not None and source_bits <= 4 else 8


def _activation_bits(quantization: str) -> int:
    return 8 if quantization == "fast" else 16


def _fallback_kernel(module: Linear, bits: int) -> BatchAdaptiveKernel | None:
    if bits != 4:
        return None
    weight = module.weight.detach()
    dense = weight.to(torch.bfloat16) if cpu_has_native_bf16() else weight
    small = quantize_tinygemm_int4(weight).matmul
    return BatchAdaptiveKernel(small, dense, module.bias, FALLBACK_MAX_SMALL_ROWS)


class PackingSink:
    """Packs the checkpoint tensors of group-quantized layers as the loader streams them (a
    `WeightSink`): their float weights are never copied into the model, which saves a pass over
    every weight and the memory to hold it at load; a GGUF matrix is packed from its blocks,
    never dequantized whole. A fused layer (q|k|v, gate|up) packs each part straight into its
    rows of the whole; its parts must be whole blocks of 16 output rows, else it loads as usual
    and is packed afterwards."""

    def __init__(self, model: torch.nn.Module, quantization: str, source_bits: int | None) -> None:
        self.layers: dict[str, Linear] = {}  # parameter name -> the layer it belongs to
        self.bits: dict[str, int] = {}  # parameter name -> bits of the layers this sink packs
        self.whole: dict[str, GroupWeight] = {}  # parameter name -> its packed weight, filled part by part
        self.parts: dict[str, set[int]] = {}  # parameter name -> the parts packed so far
        self.activation_bits = _activation_bits(quantization)
        if quantization == "none" or not load_native():
            return
        for name, module in model.named_modules():
            if _takes_group_kernel(module) and all(size % COLUMN_BLOCK == 0 for size in module.output_sizes):
                self.layers[f"{name}.weight"] = module
                self.bits[f"{name}.weight"] = _bits_for(name, quantization, source_bits)

    def __call__(self, param_name: str, part: int | None, tensor: WeightTensor) -> bool:
        bits = self.bits.get(param_name)
        if bits is None:
            return False
        layer, part = self.layers[param_name], part or 0
        if param_name not in self.whole:
            rows = sum(layer.output_sizes)
            self.whole[param_name] = (
                empty_q4(rows, layer.in_features, self.activation_bits) if bits == 4 else empty_q8(rows, layer.in_features)
            )
        start = sum(layer.output_sizes[:part])
        out = self.whole[param_name].rows(start, start + layer.output_sizes[part])
        if isinstance(tensor, QuantizedTensor):  # from its blocks, never a float copy of the matrix
            pack_q4_blocks(tensor, self.activation_bits, out) if bits == 4 else pack_q8_blocks(tensor, out)
        else:
            weight = dense(tensor).float()
            quantize_q4(weight, self.activation_bits, out) if bits == 4 else quantize_q8(weight, out)
        self.parts.setdefault(param_name, set()).add(part)
        return True

    def packed(self, param_name: str, num_parts: int) -> GroupWeight | None:
        """The layer's whole packed weight, if the sink took every part."""
        return self.whole[param_name] if len(self.parts.get(param_name, ())) == num_parts else None


def _takes_group_kernel(module: torch.nn.Module) -> bool:
    return isinstance(module, Linear) and module.in_features % GROUP_SIZE == 0


def install_weight_kernels(
    model: torch.nn.Module, quantization: str, source_bits: int | None, sink: PackingSink | None = None
) -> str:
    """Attach kernels to every `Linear` that can take them (using what `sink` packed while the
    weights loaded); returns a description for the log."""
    if quantization == "none":
        return "dense"
    has_native = load_native()
    used: Counter[str] = Counter()
    for name, module in model.named_modules():
        if not _takes_group_kernel(module):
            continue
        bits = _bits_for(name, quantization, source_bits)
        if has_native:
            packed = sink.packed(f"{name}.weight", len(module.output_sizes)) if sink is not None else None
            if packed is None:
                weight = module.weight.detach()
                packed = quantize_q4(weight, _activation_bits(quantization)) if bits == 4 else quantize_q8(weight)
            module.kernel = GroupKernel(packed, module.bias)
            used[f"q{bits}"] += 1
        elif (fallback := _fallback_kernel(module, bits)) is not None:
            module.kernel = fallback
            used["tinygemm-int4 + dense"] += 1
    if has_native:
        _release_dense_weights(model)
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(used.items()))
    return f"group-quantized {kinds}" if has_native else f"fallback {kinds or 'dense'}"


def _release_dense_weights(model: torch.nn.Module) -> None:
    """Free the float weights that group kernels replaced (the default model: 424 MB per engine
    process). A weight another module shares (an lm_head tied to the embedding) stays."""
    shared = {
        param.data_ptr()
        for module in model.modules()
        if not isinstance(module, Linear)
        for param in module.parameters(recurse=False)
    }
    for module in model.modules():
        if isinstance(module, Linear) and isinstance(module.kernel, GroupKernel):
            if module.weight.data_ptr() not in shared:
                module.weight = torch.nn.Parameter(module.weight.new_empty(0, module.in_features), requires_grad=False)
