"""The Llama family: Llama (1-3.x, with rope scaling), Mistral and Qwen2.

All three are the plain pre-norm decoder of `decoder.py`. Mistral differs from Llama only by its
sliding window (`sliding_window` on every layer). Qwen2 always has biases on q/k/v and none on the
output projection, and slides its window over some layers only (settings.py).
"""

from __future__ import annotations

from firebox.loader.arch_config import ArchConfig
from firebox.models.decoder import AttentionSpec, DecoderForCausalLM
from firebox.models.settings import layered_sliding_window, sliding_window_everywhere


class LlamaForCausalLM(DecoderForCausalLM):
    pass


class MistralForCausalLM(DecoderForCausalLM):
    layer_sliding_window = staticmethod(sliding_window_everywhere)


class Qwen2ForCausalLM(DecoderForCausalLM):
    layer_sliding_window = staticmethod(layered_sliding_window)

    @classmethod
    def attention_spec(cls, config: ArchConfig) -> AttentionSpec:
        return AttentionSpec(qkv_bias=True, o_bias=False)
