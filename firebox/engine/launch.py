"""Builds a running engine from an `EngineConfig`: weights → runner → core → async client.

The one place that wires the torch side (runner) to the torch-free side (core, client); the CLI
and the offline `LLM` both start engines through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from firebox.config import EngineConfig
from firebox.engine.client import AsyncEngine
from firebox.engine.core import EngineCore, build_engine_core
from firebox.engine.types import ModelInfo

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def build_core(config: EngineConfig, progress: Progress | None = None) -> tuple[EngineCore, ModelInfo]:
    """Load the model and build its engine core (no thread yet)."""
    from firebox.engine.runner.model_runner import ModelRunner  # torch: imported only when an engine starts
    from firebox.loader.source import load_source

    started = time.monotonic()
    source = load_source(config.model, progress)
    runner = ModelRunner(config.model, config.cache, config.device, source)
    max_model_len = min(config.model.max_model_len or source.max_model_len, source.max_model_len)
    defaults = {**source.generation_defaults, **dict(config.model.generation_overrides)}
    info = ModelInfo(
        name=config.model.name,
        architecture=source.arch.architecture,
        max_model_len=max_model_len,
        vocab_size=source.arch.vocab_size,
        eos_token_ids=source.eos_token_ids,
        generation_defaults=defaults,
    )
    core = build_engine_core(
        runner,
        source.tokenizer,
        cache_config=config.cache,
        scheduler_config=config.scheduler,
        max_model_len=max_model_len,
        eos_token_ids=source.eos_token_ids,
    )
    logger.info(
        "loaded %s (%s) in %.2fs: %s, %s, %s, %s attention, %d KV blocks of %d tokens",
        config.model.name,
        source.description,
        time.monotonic() - started,
        runner.device,
        str(runner.dtype).removeprefix("torch."),
        runner.kernels,
        type(runner.attn_backend).__name__.removesuffix("AttentionBackend"),
        runner.num_kv_blocks,
        config.cache.block_size,
    )
    return core, info


def start_engine(config: EngineConfig, progress: Progress | None = None) -> AsyncEngine:
    """Load the model and start its engine loop on a background thread."""
    core, info = build_core(config, progress)
    return AsyncEngine(core, info, core.tokenizer)
