"""Architecture name (config.json `architectures[0]` / ArchConfig.architecture) -> model class."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from firebox.models.decoder import DecoderForCausalLM
from firebox.models.llama import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
from firebox.models.mixtral import MixtralForCausalLM
from firebox.models.qwen3 import Qwen3ForCausalLM
from firebox.models.qwen3_moe import Qwen3MoeForCausalLM

MODEL_CLASSES: Mapping[str, type[DecoderForCausalLM]] = MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            LlamaForCausalLM,
            MistralForCausalLM,
            Qwen2ForCausalLM,
            Qwen3ForCausalLM,
            Qwen3MoeForCausalLM,
            MixtralForCausalLM,
        )
    }
)


def supported_architectures() -> tuple[str, ...]:
    return tuple(sorted(MODEL_CLASSES))


def get_model_class(architecture: str) -> type[DecoderForCausalLM]:
    cls = MODEL_CLASSES.get(architecture)
    if cls is None:
        supported = ", ".join(supported_architectures())
        raise ValueError(f"unsupported model architecture {architecture!r}; supported: {supported}")
    return cls
