"""Runs a Llama-family model's decoder layers as one native call per step (`DecoderStack`,
`kernels/csrc/decoder_stack.cpp`): same weights, same kernels, same order as the Python layers,
without some 80 Python dispatches per layer.

`build_native_stack` returns None unless the model is one the stack reproduces exactly: fp32
activations on CPU, plain pre-norm layers (no QK-norm, a dense SiLU MLP) and the native paged
attention backend. The Python forward stays the reference and the fallback.
"""

from __future__ import annotations

from typing import Any

import torch

from firebox.kernels import has_native_op
from firebox.models.layers.linear import Linear
from firebox.models.layers.mlp import GatedMLP
from firebox.models.layers.quant import GroupKernel, Q4Weight, Q8Weight

_EMPTY = torch.empty(0)


def _linear_parts(linear: Linear) -> tuple[list[torch.Tensor], list[int]] | None:
    """(tensors, ints) of one linear layer for DecoderStack.add_layer; None if its kernel is not
    one the stack knows."""
    bias = linear.bias.detach() if linear.bias is not None else _EMPTY
    has_bias = int(linear.bias is not None)
    kernel = linear.kernel
    if kernel is None:
        return [_EMPTY, _EMPTY, _EMPTY, linear.weight.detach(), bias], [0, 0, has_bias]
    if not isinstance(kernel, GroupKernel):
        return None
    weight = kernel.weight
    if isinstance(weight, Q4Weight):
        return [weight.packed, weight.scale, weight.low, _EMPTY, bias], [4, weight.out_features, has_bias]
    if isinstance(weight, Q8Weight):
        return [weight.packed, weight.scale, _EMPTY, _EMPTY, bias], [8, weight.out_features, has_bias]
    return None


def _supported(model: Any) -> bool:
    layers = model.model.layers
    return (
        has_native_op("fused_add_rms_norm")
        and model.dtype == torch.float32
        and model.model.embed_tokens.weight.device.type == "cpu"
        and all(isinstance(layer.mlp, GatedMLP) and layer.self_attn.q_norm is None for layer in layers)
    )


def build_native_stack(model: Any, kv_caches: list[torch.Tensor], block_size: int) -> Any | None:
    """A DecoderStack over `model`'s layers and KV tensors, or None where it does not apply."""
    if not _supported(model):
        return None
    attn = model.model.layers[0].self_attn
    config = model.config
    stack = torch.classes.firebox.DecoderStack(
        attn.num_heads, attn.num_kv_heads, attn.head_dim, block_size, config.rms_norm_eps, attn.scale
    )
    for layer in model.model.layers:
        linears = (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj)
        parts = [_linear_parts(linear) for linear in linears]
        if any(p is None for p in parts):
            return None
        tensors = [layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()]
        ints: list[int] = []
        for part_tensors, part_ints in parts:  # type: ignore[misc]
            tensors.extend(part_tensors)
            ints.extend(part_ints)
        stack.add_layer(tensors, ints)
    stack.set_final_norm(model.model.norm.weight.detach())
    stack.set_kv_caches(kv_caches)
    return stack


def run_native_stack(stack: Any, hidden: torch.Tensor, cos_sin: torch.Tensor, meta: Any) -> torch.Tensor:
    """The decoder layers and final norm over `hidden` [num_tokens, hidden] with `meta` (the
    native CPU backend's CpuPagedMetadata)."""
    fresh = [(span.token_start, span.token_end) for span in meta.fresh]
    return stack.forward(
        hidden,
        cos_sin,
        meta.slot_mapping,
        meta.block_table,
        meta.token_row,
        meta.kv_len,
        meta.num_paged,
        _EMPTY.long() if meta.paged_tokens is None else meta.paged_tokens,
        torch.tensor(fresh, dtype=torch.long).view(-1, 2),
    )
