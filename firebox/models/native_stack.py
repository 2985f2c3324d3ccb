"""Runs a Llama-family model's decoder layers as one native call per step (`DecoderStack`,
`kernels/csrc/decoder_stack.cpp`): same weights, same kernels, same order as the Python layers,
without some 80 Python dispatches per layer.

The stack reproduces only fp32 activations on CPU, plain pre-norm layers (no QK-norm, a dense
SiLU MLP, dense or 4/8-bit group weights) over the native paged attention backend;
`unsupported_reason` says which of these a model misses. The weights cross into C++ as typed
records (`NativeLayer`), unpacked by position only at the one `add_layer` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from firebox.kernels import native_build_failed
from firebox.models.layers.linear import Linear
from firebox.models.layers.mlp import GatedMLP
from firebox.models.layers.quant import GroupKernel, Q4Weight, Q8Weight

if TYPE_CHECKING:
    from firebox.models.decoder import DecoderLayer
    from firebox.models.layer_stacks import StackTarget

_EMPTY = torch.empty(0)


@dataclass(frozen=True, slots=True)
class NativeLinear:
    """One linear layer as DecoderStack holds it."""

    bits: int  # 4 or 8: the group kernel over packed/scale (low: 4-bit only); 0: the dense weight
    out_features: int
    activation_bits: int = 16  # of a 4-bit layer: 8 or 16
    packed: torch.Tensor = _EMPTY
    scale: torch.Tensor = _EMPTY
    low: torch.Tensor = _EMPTY
    dense: torch.Tensor = _EMPTY  # [out, in] when bits == 0
    bias: torch.Tensor | None = None  # [out]


@dataclass(frozen=True, slots=True)
class NativeLayer:
    """One decoder layer as DecoderStack holds it."""

    input_norm: torch.Tensor  # [hidden]
    post_norm: torch.Tensor  # [hidden]
    qkv: NativeLinear
    o: NativeLinear
    gate_up: NativeLinear
    down: NativeLinear
    sliding_window: int  # positions each query sees; 0: all

    def add_to(self, stack: Any) -> None:
        """`DecoderStack.add_layer(tensors, ints)`: the one place this record is unpacked by
        position, in the order decoder_stack.cpp reads it."""
        tensors, ints = [self.input_norm, self.post_norm], []
        for linear in (self.qkv, self.o, self.gate_up, self.down):
            bias = _EMPTY if linear.bias is None else linear.bias
            tensors += [linear.packed, linear.scale, linear.low, linear.dense, bias]
            ints += [linear.bits, linear.out_features, int(linear.bias is not None), linear.activation_bits]
        stack.add_layer(tensors, ints + [self.sliding_window])


def native_linear(linear: Linear) -> NativeLinear | None:
    """`linear` as the stack holds it; None if its kernel is not one the stack knows."""
    bias = None if linear.bias is None else linear.bias.detach()
    kernel = linear.kernel
    if kernel is None:
        return NativeLinear(0, sum(linear.output_sizes), dense=linear.weight.detach(), bias=bias)
    weight = kernel.weight if isinstance(kernel, GroupKernel) else None
    if isinstance(weight, Q4Weight):
        return NativeLinear(
            4, weight.out_features, weight.activation_bits, weight.packed, weight.scale, weight.low, bias=bias
        )
    if isinstance(weight, Q8Weight):
        return NativeLinear(8, weight.out_features, 16, weight.packed, weight.scale, bias=bias)
    return None


def _linears(layer: DecoderLayer) -> dict[str, Linear]:
    attn, mlp = layer.self_attn, layer.mlp
    return {
        "qkv_proj": attn.qkv_proj,
        "o_proj": attn.o_proj,
        "gate_up_proj": mlp.gate_up_proj,
        "down_proj": mlp.down_proj,
    }


def _layer_reason(layer: DecoderLayer) -> str | None:
    if layer.self_attn.q_norm is not None:
        return "its layers have QK-norm, which the stack does not run"
    if not isinstance(layer.mlp, GatedMLP):
        return f"layer {layer.self_attn.layer_idx} has a {type(layer.mlp).__name__} MLP, not a dense one"
    for name, linear in _linears(layer).items():
        if native_linear(linear) is None:
            return f"layer {layer.self_attn.layer_idx}'s {name} runs {type(linear.kernel).__name__}"
    return None


class NativeStackBackend:
    """The `native` entry of layer_stacks.py's registry."""

    description = "native decoder stack"
    requirements = "fp32 on CPU, native attention, plain pre-norm layers with known kernels"

    def unsupported_reason(self, target: StackTarget) -> str | None:
        model = target.model
        if native_build_failed():  # checked first: the attention backend falls back to torch then too
            return "the native kernels did not build"
        if target.attention_backend != "native":  # the native backend implies the kernels are loaded
            return f"the attention backend is {target.attention_backend}"
        if model.dtype != torch.float32:
            return f"the model runs in {str(model.dtype).removeprefix('torch.')}, the stack in float32 only"
        if model.model.embed_tokens.weight.device.type != "cpu":
            return f"the model is on {model.model.embed_tokens.weight.device.type}, the stack runs on CPU only"
        reasons = (_layer_reason(layer) for layer in model.model.layers)
        return next((r for r in reasons if r is not None), None)

    def build(self, target: StackTarget) -> NativeDecoderStack:
        return NativeDecoderStack(target)


class NativeDecoderStack:
    """A `LayerStack` over a DecoderStack built from the model's weights and KV tensors;
    `attn_meta` must be the native CPU backend's (`CpuPagedMetadata`)."""

    def __init__(self, target: StackTarget) -> None:
        model = target.model
        attn = model.model.layers[0].self_attn
        self.stack = torch.classes.firebox.DecoderStack(
            attn.num_heads, attn.num_kv_heads, attn.head_dim, target.block_size, model.config.rms_norm_eps, attn.scale
        )
        for layer in model.model.layers:
            linears = {name: native_linear(linear) for name, linear in _linears(layer).items()}
            NativeLayer(
                layer.input_layernorm.weight.detach(),
                layer.post_attention_layernorm.weight.detach(),
                qkv=linears["qkv_proj"],
                o=linears["o_proj"],
                gate_up=linears["gate_up_proj"],
                down=linears["down_proj"],
                sliding_window=layer.self_attn.sliding_window or 0,
            ).add_to(self.stack)
        self.stack.set_final_norm(model.model.norm.weight.detach())
        self.stack.set_kv_caches(target.kv_caches)

    def __call__(
        self, hidden: torch.Tensor, cos_sin: torch.Tensor, kv_caches: list[torch.Tensor], attn_meta: Any
    ) -> torch.Tensor:
        """The layers and final norm over `hidden` [num_tokens, hidden]; the KV tensors are the
        ones the stack was built over."""
        fresh = [(span.token_start, span.token_end) for span in attn_meta.fresh]
        return self.stack.forward(
            hidden,
            cos_sin,
            attn_meta.slot_mapping,
            attn_meta.block_table,
            attn_meta.token_row,
            attn_meta.kv_len,
            attn_meta.num_paged,
            _EMPTY.long() if attn_meta.paged_tokens is None else attn_meta.paged_tokens,
            torch.tensor(fresh, dtype=torch.long).view(-1, 2),
        )
