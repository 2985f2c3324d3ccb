"""The pre-norm decoder-only transformer that the Llama, Qwen and Mixtral families share.

Reference: transformers' `modeling_llama.py`. Each layer is RMSNorm -> attention -> residual ->
RMSNorm -> MLP -> residual. Attention projects q|k|v with one fused matmul, applies RoPE at the
given positions and hands the heads to the paged attention backend, which writes the KV cache.
A family subclasses `DecoderForCausalLM` and overrides `attention_spec`, `make_mlp`,
`weight_rules`, `layer_sliding_window` and `refusals` (settings.py); nothing else varies. The
layers run through a `LayerStack`: the modules here by default, or a native copy of them that the
runner picks at load (`layer_stacks.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from firebox.kernels import has_native_op
from firebox.loader.arch_config import ArchConfig
from firebox.loader.quantized import WeightTensor
from firebox.models.attention import AttentionBackend
from firebox.models.layers.activation import check_activation
from firebox.models.layers.linear import Linear
from firebox.models.layers.mlp import GatedMLP
from firebox.models.layers.norm import RMSNorm
from firebox.models.layers.rotary import RotaryEmbedding, apply_rotary
from firebox.models.layers.weights import WeightRule, WeightSink, load_named_weights, weight_rule
from firebox.models.settings import COMMON_REFUSALS, Refusal, no_sliding_window, refuse_unsupported

# Hugging Face keeps q/k/v and gate/up as separate tensors; we fuse them into one matmul each.
DENSE_WEIGHT_RULES: tuple[WeightRule, ...] = (
    weight_rule(
        r"(?P<p>.+\.self_attn)\.(?P<part>q|k|v)_proj\.(?P<kind>weight|bias)",
        r"\g<p>.qkv_proj.\g<kind>",
        ("q", "k", "v"),
    ),
    weight_rule(
        r"(?P<p>.+\.mlp)\.(?P<part>gate|up)_proj\.(?P<kind>weight|bias)",
        r"\g<p>.gate_up_proj.\g<kind>",
        ("gate", "up"),
    ),
)


@dataclass(frozen=True, slots=True)
class AttentionSpec:
    qkv_bias: bool
    o_bias: bool
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)


class DecoderAttention(nn.Module):
    def __init__(
        self,
        config: ArchConfig,
        spec: AttentionSpec,
        backend: AttentionBackend,
        layer_idx: int,
        dtype: torch.dtype,
        sliding_window: int | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.layer_idx = layer_idx
        self.sliding_window = sliding_window  # each query sees only its last this many positions; None: all
        self.backend = backend
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(
            config.hidden_size, (q_size, kv_size, kv_size), bias=spec.qkv_bias, dtype=dtype
        )
        self.o_proj = Linear(q_size, config.hidden_size, bias=spec.o_bias, dtype=dtype)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype) if spec.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype) if spec.qk_norm else None
        # one in-place pass over q and k (float32 cos|sin) instead of a dozen tensor ops
        self.native_rope = self.o_proj.weight.device.type == "cpu" and has_native_op("rotary_embedding")

    def forward(
        self,
        hidden: torch.Tensor,  # [num_tokens, hidden]
        cos_sin: torch.Tensor,  # [num_tokens, head_dim]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
        attn_meta: Any,
    ) -> torch.Tensor:  # [num_tokens, hidden]
        # [num_tokens, heads + 2 * kv_heads, head_dim]
        qkv = self.qkv_proj(hidden).view(hidden.shape[0], -1, self.head_dim)
        q, k, v = qkv.split((self.num_heads, self.num_kv_heads, self.num_kv_heads), dim=1)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.native_rope and q.stride(1) == self.head_dim and k.stride(1) == self.head_dim:
            torch.ops.firebox.rotary_embedding(q, k, cos_sin.float())  # in place, inside qkv
        else:
            qk = apply_rotary(torch.cat((q, k), dim=1), cos_sin)  # q and k heads rotated in one pass
            q, k = qk.split((self.num_heads, self.num_kv_heads), dim=1)
        # [num_tokens, heads * head_dim]
        out = self.backend.forward(q, k, v, kv_cache, attn_meta, self.scale, sliding_window=self.sliding_window)
        return self.o_proj(out)


class DecoderLayer(nn.Module):
    def __init__(
        self, config: ArchConfig, self_attn: DecoderAttention, mlp: nn.Module, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.self_attn = self_attn
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.mlp = mlp

    def forward(
        self,
        hidden: torch.Tensor,  # [num_tokens, hidden]: the previous layer's output
        residual: torch.Tensor | None,  # [num_tokens, hidden]: the residual stream; None before layer 0
        cos_sin: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_meta: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(this layer's output, the residual stream): the residual add is fused into the next norm."""
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm.forward_add(hidden, residual)
        hidden = self.self_attn(hidden, cos_sin, kv_cache, attn_meta)
        hidden, residual = self.post_attention_layernorm.forward_add(hidden, residual)
        return self.mlp(hidden), residual


class LayerStack(Protocol):
    """Runs a decoder's layers and final norm over the embedded tokens: `DecoderModel.run_layers`
    (the reference) or a native copy of the same layers (`native_stack.py`)."""

    def __call__(
        self,
        hidden: torch.Tensor,  # [num_tokens, hidden]: the embeddings
        cos_sin: torch.Tensor,  # [num_tokens, head_dim]
        kv_caches: list[torch.Tensor],  # one per layer, in the attention backend's layout
        attn_meta: Any,
    ) -> torch.Tensor:  # [num_tokens, hidden]: after the final norm
        ...


class DecoderModel(nn.Module):
    """Embeddings, layers and final norm: the `model.` prefix of Hugging Face checkpoint names."""

    def __init__(self, config: ArchConfig, layers: list[DecoderLayer], dtype: torch.dtype) -> None:
        super().__init__()
        # uninitialized: the loader (or dummy init) writes every row; a random init costs ~0.15 s
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size, dtype=dtype)
        )
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.rotary_emb = RotaryEmbedding(
            config.head_dim, config.max_position_embeddings, config.rope_theta, config.rope_scaling
        )

    def run_layers(
        self, hidden: torch.Tensor, cos_sin: torch.Tensor, kv_caches: list[torch.Tensor], attn_meta: Any
    ) -> torch.Tensor:
        """The Python `LayerStack`: every layer's modules in turn, then the final norm."""
        if len(kv_caches) != len(self.layers):
            raise ValueError(f"got {len(kv_caches)} KV caches for {len(self.layers)} layers")
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(hidden, residual, cos_sin, kv_cache, attn_meta)
        return self.norm.forward_add(hidden, residual)[0]


class DecoderForCausalLM(nn.Module):
    """The model contract the runner relies on: forward -> hidden states, compute_logits, load_weights."""

    weight_rules: ClassVar[tuple[WeightRule, ...]] = DENSE_WEIGHT_RULES
    layer_sliding_window: ClassVar[Callable[[ArchConfig, int], int | None]] = staticmethod(no_sliding_window)
    refusals: ClassVar[tuple[Refusal, ...]] = COMMON_REFUSALS

    def __init__(
        self, config: ArchConfig, attn_backend: AttentionBackend, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        check_activation(config.get("hidden_act", "silu"))
        refuse_unsupported(config, self.refusals)
        self.config = config
        self.dtype = dtype
        spec = self.attention_spec(config)
        layers = [
            DecoderLayer(
                config,
                DecoderAttention(config, spec, attn_backend, i, dtype, self.layer_sliding_window(config, i)),
                self.make_mlp(config, i, dtype),
                dtype,
            )
            for i in range(config.num_hidden_layers)
        ]
        self.model = DecoderModel(config, layers, dtype)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.requires_grad_(False)
        self.layer_stack: LayerStack = self.model.run_layers  # until the runner picks one (layer_stacks.py)

    @classmethod
    def attention_spec(cls, config: ArchConfig) -> AttentionSpec:
        return AttentionSpec(qkv_bias=bool(config.attention_bias), o_bias=bool(config.attention_bias))

    @classmethod
    def make_mlp(cls, config: ArchConfig, layer_idx: int, dtype: torch.dtype) -> nn.Module:
        return GatedMLP(
            config.hidden_size, config.intermediate_size, bool(config.get("mlp_bias", False)), dtype
        )

    def forward(
        self,
        input_ids: torch.Tensor,  # [num_tokens]
        positions: torch.Tensor,  # [num_tokens]
        kv_caches: list[torch.Tensor],  # per layer [2, num_blocks, block_size, num_kv_heads, head_dim]
        attn_meta: Any,
    ) -> torch.Tensor:  # [num_tokens, hidden]
        hidden = self.model.embed_tokens(input_ids)
        cos_sin = self.model.rotary_emb.lookup(positions, hidden.dtype)  # shared by every layer
        return self.layer_stack(hidden, cos_sin, kv_caches, attn_meta)

    def use_layer_stack(self, stack: LayerStack) -> None:
        """Run the layers through `stack`, built over these very weights (layer_stacks.py)."""
        self.layer_stack = stack

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [n, hidden] -> [n, vocab] float32
        return self.lm_head(hidden).float()

    def load_weights(self, weights: Iterable[tuple[str, WeightTensor]], sink: WeightSink | None = None) -> None:
        """Load tensors named as in a Hugging Face checkpoint (fusing q/k/v, gate/up, experts);
        `sink` may take tensors instead (see layers/weights.py)."""
        ignore = r".*rotary_emb\.inv_freq" + (r"|lm_head\.weight" if self.config.tie_word_embeddings else "")
        load_named_weights(self, weights, self.weight_rules, re.compile(ignore), sink)
