"""What the serving layer needs of a model before (or without) an engine: its `ModelInfo` and
tokenizer, read from the model's source without reading its weights.

A deployment scaled to zero still templates and tokenizes the request it is about to cold-start
for, and an engine in its own process keeps the tokenizer on the parent's side of the pipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from firebox.config import EngineConfig
from firebox.engine.types import ModelInfo
from firebox.loader.tokenizer import Tokenizer

if TYPE_CHECKING:
    from firebox.loader.source import ModelSource


@dataclass(frozen=True, slots=True)
class ModelDescription:
    info: ModelInfo
    tokenizer: Tokenizer


def describe_model(config: EngineConfig) -> ModelDescription:
    """The same `ModelInfo` that `build.build_core` reports for `config`, without loading weights."""
    from firebox.loader.source import load_source  # torch: only where a model is described

    source = load_source(config.model)
    return ModelDescription(model_info(config, source), source.tokenizer)


def model_info(config: EngineConfig, source: ModelSource) -> ModelInfo:
    """`config`'s model as the engine serves it: the context capped by the source's, and the
    source's generation defaults under the config's overrides."""
    return ModelInfo(
        name=config.model.name,
        architecture=source.arch.architecture,
        max_model_len=min(config.model.max_model_len or source.max_model_len, source.max_model_len),
        vocab_size=source.arch.vocab_size,
        eos_token_ids=source.eos_token_ids,
        generation_defaults={**source.generation_defaults, **dict(config.model.generation_overrides)},
        tool_call_format=config.model.tool_call_format,
    )
