"""A snapshot of the engine core's load, for the Prometheus gauges and counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1, blocks held by requests
    prefix_cache_queries: int  # tokens looked up in the prefix cache (cumulative)
    prefix_cache_hits: int  # of those, tokens found (cumulative)
    num_preemptions: int  # cumulative
    num_draft_tokens: int = 0  # speculation: drafted tokens verified (cumulative)
    num_accepted_draft_tokens: int = 0  # of those, kept (cumulative)
