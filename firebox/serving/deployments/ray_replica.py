"""`FireboxReplica`: the class of a Ray Serve deployment whose replicas each own one firebox engine.

It runs inside Ray Serve replica actors, on any node of the cluster (firebox must be installed
there). The engine is built as `engine.build` builds it and stepped on a thread of the actor
(`launch.run_on_thread`). `generate` streams back, through the front's `DeploymentHandle`, first
a `ReplicaTag` (which replica took the request, and its counters), then the request's
`RequestOutput`s. When the front cancels the stream (its client went away), Ray cancels this
generator and leaving it aborts the request in the engine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from firebox.config import EngineConfig
from firebox.engine.build import CoreBuilder
from firebox.engine.types import EngineRequest, RequestOutput
from firebox.serving.generation.fanout import aclose_quietly


@dataclass(frozen=True, slots=True)
class ReplicaTag:
    """The first item of every stream: the front reports it (`fireworks-backend-host`, per-replica
    counts) and learns that a replica has taken the request."""

    replica_id: str  # Ray Serve's id of the replica
    host: str  # "node address:pid"
    num_served: int  # requests this replica has taken, this one included
    num_ongoing: int  # its requests in flight, this one included


class FireboxReplica:
    """One replica. `build` makes the engine core (default: `build.build_core`; tests pass a fake)."""

    def __init__(self, config: EngineConfig, build: CoreBuilder | None = None) -> None:
        from ray import serve

        from firebox.engine.build import build_core  # torch: only inside the replica
        from firebox.engine.launch import run_on_thread

        core, info = (build or build_core)(config, None)
        self._engine = run_on_thread(core, info, core.tokenizer)
        self._replica_id = serve.get_replica_context().replica_id.unique_id
        self._host = f"{_node_address()}:{os.getpid()}"
        self._num_served = 0

    async def generate(self, request: EngineRequest) -> AsyncIterator[ReplicaTag | RequestOutput]:
        self._num_served += 1
        yield ReplicaTag(self._replica_id, self._host, self._num_served, self._engine.num_outstanding + 1)
        stream = self._engine.generate(request)
        try:
            async for output in stream:
                yield output
        finally:
            await aclose_quietly(stream)  # an unfinished stream aborts its request in the engine

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose engine stopped is replaced."""
        if not self._engine.is_alive:
            raise RuntimeError("the replica's engine stopped")

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown(timeout=5.0)


def _node_address() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside a Ray worker
        return socket.gethostname()
