"""Chooses and installs the linear-layer kernels of a loaded model.

With firebox's native kernels (CPU), every linear layer keeps a 4- or 8-bit group-quantized
weight and one kernel serves every step, from a one-token decode to a long prefill
(`models/layers/quant.py`): the weight bytes read per decode step fall four- to eight-fold, the
products are integer instructions, and a row's result does not depend on the rest of the batch.

- `none`: dense in the model dtype (the reference numerics).
- `auto`: faithful to the checkpoint. Layers of a 4-bit GGUF stay 4-bit (q4 repacks Q4_0/Q4_1
  exactly), anything else 8-bit; the output projection (lm_head) is always 8-bit, since 4 bits
  there cost ~0.3 nats of log-probability. Only on CPU.
- `int4` / `int8`: every layer 4-bit (lm_head 8-bit) / everything 8-bit.
Without the native kernels, 4-bit layers fall back to torch's tinygemm kernel for steps of a few
rows and a dense matmul beyond; 8-bit weights stay dense.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from firebox.kernels import load_native
from firebox.kernels.cpu import cpu_has_native_bf16
from firebox.models.layers.linear import Linear
from firebox.models.layers.quant import (
    GROUP_SIZE,
    BatchAdaptiveKernel,
    GroupKernel,
    quantize_q4,
    quantize_q8,
    quantize_tinygemm_int4,
)

logger = logging.getLogger(__name__)

# Without native kernels: torch's tinygemm int4 up to this many rows, a dense matmul beyond.
FALLBACK_MAX_SMALL_ROWS = 3
QUANTIZATIONS = ("none", "auto", "int4", "int8")


def resolve_quantization(name: str, device: torch.device) -> str:
    if name not in QUANTIZATIONS:
        raise ValueError(f"quantization {name!r} is not supported; use one of {QUANTIZATIONS}")
    if device.type != "cpu":
        if name in ("int4", "int8"):
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


def _fallback_kernel(module: Linear, bits: int) -> BatchAdaptiveKernel | None:
    if bits != 4:
        return None
    weight = module.weight.detach()
    dense = weight.to(torch.bfloat16) if cpu_has_native_bf16() else weight
    small = quantize_tinygemm_int4(weight).matmul
    return BatchAdaptiveKernel(small, dense, module.bias, FALLBACK_MAX_SMALL_ROWS)


def install_weight_kernels(model: torch.nn.Module, quantization: str, source_bits: int | None) -> str:
    """Attach kernels to every `Linear` that can take them; returns a description for the log."""
    if quantization == "none":
        return "dense"
    has_native = load_native()
    used: Counter[str] = Counter()
    for name, module in model.named_modules():
        if not isinstance(module, Linear) or module.in_features % GROUP_SIZE:
            continue
        bits = _bits_for(name, quantization, source_bits)
        if has_native:
            weight = module.weight.detach()
            packed = quantize_q4(weight) if bits == 4 else quantize_q8(weight)
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
