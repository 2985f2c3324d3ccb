"""Chooses and installs the linear-layer kernels of a loaded model, from what the CPU reports.

Steps of a few rows (decoding a few requests: memory-bound) run a weight-only
quantized kernel; larger steps (prefill, big batches: compute-bound) run a dense matmul, in bf16
where the CPU has native bf16 dot products (AVX-512 BF16 / AMX), else in the model dtype.

- `none`: dense only.
- `auto`: faithful to the checkpoint. Layers of a 4-bit GGUF stay 4-bit (q4 repacks Q4_0/Q4_1
  exactly), anything else 8-bit; the output projection (lm_head) is always 8-bit, since 4 bits
  there cost ~0.3 nats of log-probability. Only on CPU.
- `int4` / `int8`: every layer 4-bit (lm_head 8-bit) / everything 8-bit.
Without firebox's native kernels, 4-bit layers fall back to torch's tinygemm kernel and 8-bit
weights stay dense.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from firebox.kernels.cpu import cpu_has_native_bf16
from firebox.kernels import load_native
from firebox.models.layers.linear import Linear
from firebox.models.layers.quant import (
    GROUP_SIZE,
    BatchAdaptiveKernel,
    MatMul,
    quantize_q4,
    quantize_q8,
    quantize_tinygemm_int4,
)

logger = logging.getLogger(__name__)

# Crossovers measured on an AVX-512 BF16 CPU (benchmarks/linear_kernels.py): for a layer's
# [3072, 576] weight the 4-bit kernel wins up to ~3 rows and oneDNN's bf16 beyond; for the
# [49152, 576] output projection the 8-bit kernel wins up to ~8 rows.
LAYER_MAX_SMALL_ROWS = 3
LM_HEAD_MAX_SMALL_ROWS = 8
QUANTIZATIONS = ("none", "auto", "int4", "int8")


def resolve_quantization(name: str, device: torch.device) -> str:
    if name not in QUANTIZATIONS:
        raise ValueError(f"quantization {name!r} is not supported; use one of {QUANTIZATIONS}")
    if device.type != "cpu":
        if name in ("int4", "int8"):
            raise ValueError(f"quantization {name!r} is a CPU kernel; use 'none' on {device.type}")
        return "none"
    return name


def _bits_for(name: str, quantization: str, source_bits: int | None) -> int | None:
    """Weight bits of one linear layer's small-step kernel; None keeps it dense."""
    if quantization == "none":
        return None
    if name.endswith("lm_head") or quantization == "int8":
        return 8
    if quantization == "int4":
        return 4
    return 4 if source_bits is not None and source_bits <= 4 else 8


def _small_kernel(weight: torch.Tensor, bits: int, has_native: bool) -> tuple[MatMul, str] | None:
    if has_native:
        packed = quantize_q4(weight) if bits == 4 else quantize_q8(weight)
        return packed.matmul, f"q{bits}"
    if bits == 4:
        return quantize_tinygemm_int4(weight).matmul, "tinygemm-int4"
    return None


def install_weight_kernels(
    model: torch.nn.Module,
    quantization: str,
    source_bits: int | None,
) -> str:
    """Attach kernels to every `Linear` that can take them; returns a description for the log."""
    if quantization == "none":
        return "dense"
    has_native = load_native()
    dense_dtype = torch.bfloat16 if cpu_has_native_bf16() else None
    used: Counter[str] = Counter()
    for name, module in model.named_modules():
        if not isinstance(module, Linear) or module.in_features % GROUP_SIZE:
            continue
        bits = _bits_for(name, quantization, source_bits)
        small = None if bits is None else _small_kernel(module.weight.detach(), bits, has_native)
        if small is None:
            continue
        weight = module.weight.detach()
        dense = weight.to(dense_dtype) if dense_dtype is not None else weight
        max_rows = LM_HEAD_MAX_SMALL_ROWS if name.endswith("lm_head") else LAYER_MAX_SMALL_ROWS
        module.kernel = BatchAdaptiveKernel(small[0], dense, module.bias, max_rows)
        used[small[1]] += 1
    dense_name = str(dense_dtype or "model dtype").removeprefix("torch.")
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(used.items()))
    return f"weight-only {kinds} for small steps, dense {dense_name} for large ones"
