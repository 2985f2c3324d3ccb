"""`fake_replica`'s engine core at 20 ms a token or more, for replicas that Ray Serve builds (in
an importable module: Ray pickles the builder by reference). A long stream outlasts the checks
made while it runs."""

from __future__ import annotations

import time
from typing import Any

from firebox.config import EngineConfig
from tests.deployments.fake_replica import build_fake_core

TOKEN_S = 0.02


def build_slow_fake_core(config: EngineConfig, progress: Any = None) -> Any:
    core, info = build_fake_core(config, progress)
    fast = core.executor.next_token

    def next_token(sched: Any, context: list[int]) -> int:
        time.sleep(TOKEN_S)
        return fast(sched, context)

    core.executor.next_token = next_token
    return core, info
