"""The load of each deployment's replicas, for the /metrics gauges serverless models have
(requests running and waiting, KV-cache usage, prefix-cache counters), labelled
`<base model>#<deployment>` so that they never collide with a shared pool's model of that name."""

from __future__ import annotations

from collections.abc import Iterable

from firebox.engine.stats import EngineStats
from firebox.serving.deployments.live import LiveDeployment


def deployment_stats(deployments: Iterable[object]) -> dict[str, EngineStats]:
    """By label, the combined stats of every deployment whose replicas run here (a Ray Serve
    deployment reports through Ray's own metrics)."""
    return {f"{d.spec.base_model}#{d.name}": combined(d) for d in deployments if isinstance(d, LiveDeployment)}


def combined(deployment: LiveDeployment) -> EngineStats:
    """Counts summed over the live replicas, plus the requests waiting for a replica; the
    KV-cache usage is the replicas' mean."""
    stats = [r.engine.stats for r in deployment.replicas if r.engine.is_alive]

    def total(field: str) -> int:
        return sum(getattr(s, field, 0) for s in stats)

    return EngineStats(
        num_running=total("num_running"),
        num_waiting=total("num_waiting") + deployment.num_waiting,
        kv_cache_usage=sum(s.kv_cache_usage for s in stats) / len(stats) if stats else 0.0,
        prefix_cache_queries=total("prefix_cache_queries"),
        prefix_cache_hits=total("prefix_cache_hits"),
        num_preemptions=total("num_preemptions"),
        num_draft_tokens=total("num_draft_tokens"),
        num_accepted_draft_tokens=total("num_accepted_draft_tokens"),
    )
