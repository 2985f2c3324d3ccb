"""Starting an engine on a thread of this process: config → core (`build.py`) → `AsyncEngine`
over a `ThreadTransport`. Its counterpart for an engine in its own process is `process.py`."""

from __future__ import annotations

from firebox.config import EngineConfig
from firebox.engine.build import Progress, build_core
from firebox.engine.client import AsyncEngine
from firebox.engine.core import EngineCore
from firebox.engine.transport.thread import ThreadTransport
from firebox.engine.types import ModelInfo
from firebox.loader.tokenizer import Tokenizer


def start_engine(config: EngineConfig, progress: Progress | None = None) -> AsyncEngine:
    """Load the model and start its engine loop on a background thread."""
    core, info = build_core(config, progress)
    return run_on_thread(core, info, core.tokenizer)


def run_on_thread(core: EngineCore, model_info: ModelInfo, tokenizer: Tokenizer) -> AsyncEngine:
    """An engine client over `core`, stepped from now on by a thread of its own."""
    return AsyncEngine(ThreadTransport(core), model_info, tokenizer, core.stats())
