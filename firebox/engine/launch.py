"""Starts an engine on a thread of this process: config → core (`build.py`) → async client."""

from __future__ import annotations

from firebox.config import EngineConfig
from firebox.engine.build import Progress, build_core
from firebox.engine.client import AsyncEngine


def start_engine(config: EngineConfig, progress: Progress | None = None) -> AsyncEngine:
    """Load the model and start its engine loop on a background thread."""
    core, info = build_core(config, progress)
    return AsyncEngine(core, info, core.tokenizer)
