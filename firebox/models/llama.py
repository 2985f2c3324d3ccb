"""The Llama family: Llama (1-3.x, with rope scaling), Mistral and Qwen2.

All three are the plain pre-norm decoder of `decoder.py`. Mistral differs from Llama only by its
sliding window, which firebox does not apply (contexts stay within what the cache holds). Qwen2
always has biases on q/k/v and none on the output projection.
"""

from __future__ import annotations

from firebox.loader.arch_config import ArchConfig
from firebox.models.decoder import AttentionSpec, DecoderForCausalLM


class LlamaForCausalLM(DecoderForCausalLM):
    pass


class MistralForCausalLM(DecoderForCausalLM):
    pass


class Qwen2ForCausalLM(DecoderForCausalLM):
    @classmethod
    def attention_spec(cls, config: ArchConfig) -> AttentionSpec:
        return AttentionSpec(qkv_bias=True, o_bias=False)
