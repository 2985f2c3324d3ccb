"""Builds an engine core from an `EngineConfig`: weights → runner → core.

The one place that wires the torch side (runner) to the torch-free side (core). Both launchers use
it (`launch.start_engine` on a thread, `process_worker` in the engine process), and so does the
offline `LLM`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from firebox.config import EngineConfig, SchedulerConfig
from firebox.engine.core import EngineCore, build_engine_core
from firebox.engine.speculation import DraftModelProposer
from firebox.engine.describe import model_info
from firebox.engine.types import ModelInfo

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
CoreBuilder = Callable[[EngineConfig, Progress | None], tuple[EngineCore, ModelInfo]]


def build_core(config: EngineConfig, progress: Progress | None = None) -> tuple[EngineCore, ModelInfo]:
    """Load the model and build its engine core (nothing steps it yet)."""
    from firebox.engine.runner.model_runner import ModelRunner  # torch: imported only when an engine starts
    from firebox.loader.source import load_source

    started = time.monotonic()
    source = load_source(config.model, progress)
    runner = ModelRunner(config.model, config.cache, config.device, source)
    info = model_info(config, source)
    core = build_engine_core(
        runner,
        source.tokenizer,
        cache_config=config.cache,
        scheduler_config=config.scheduler,
        max_model_len=info.max_model_len,
        eos_token_ids=source.eos_token_ids,
    )
    if config.draft_model is not None:
        core.draft_proposer = _draft_proposer(config, info)
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


def _draft_proposer(config: EngineConfig, info: ModelInfo) -> DraftModelProposer:
    """The draft model in an engine core of its own (one request at a time, greedy)."""
    draft = dataclasses.replace(
        config, model=config.draft_model, draft_model=None, scheduler=SchedulerConfig(max_num_seqs=1)
    )
    draft_core, draft_info = build_core(draft)
    if draft_info.vocab_size != info.vocab_size:
        raise ValueError(
            f"the draft model's vocabulary ({draft_info.vocab_size} tokens) is not the model's ({info.vocab_size})"
        )
    return DraftModelProposer(draft_core)
