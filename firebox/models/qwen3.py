"""Qwen3: the Llama decoder with a per-head RMSNorm on q and k before RoPE.

`head_dim` is its own config key (it need not equal hidden_size / num_heads); biases on the
attention projections follow `attention_bias` (off in the released models); a sliding window, as
Qwen2's, on the layers `layer_types` marks.
"""

from __future__ import annotations

from firebox.loader.arch_config import ArchConfig
from firebox.models.decoder import AttentionSpec, DecoderForCausalLM
from firebox.models.settings import layered_sliding_window


class Qwen3ForCausalLM(DecoderForCausalLM):
    layer_sliding_window = staticmethod(layered_sliding_window)

    @classmethod
    def attention_spec(cls, config: ArchConfig) -> AttentionSpec:
        bias = bool(config.attention_bias)
        return AttentionSpec(qkv_bias=bias, o_bias=bias, qk_norm=True)
