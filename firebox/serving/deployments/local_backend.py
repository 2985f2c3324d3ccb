"""`LocalProcessBackend`: each replica an engine in a child process of this server."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from firebox.serving.deployments.replicas import Replica, ReplicaSpec


class LocalProcessBackend:
    """Replicas as local engine processes. `build` is what the child runs to build its engine
    core (default: `build.build_core`; tests pass a fake); loading and stopping happen off the
    event loop."""

    def __init__(self, build: Any = None, start_timeout_s: float = 600.0, stop_timeout_s: float = 10.0) -> None:
        self._build = build
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._hostname = socket.gethostname()
        self._replicas: dict[int, Replica] = {}

    async def start_replica(self, spec: ReplicaSpec) -> Replica:
        from firebox.engine.build import build_core  # the engine side: only once a replica starts
        from firebox.engine.process import launch_process_engine

        def start() -> Any:
            launch = launch_process_engine(spec.config, build=self._build or build_core)
            return launch.wait(description=spec.description, timeout=self._start_timeout_s)

        engine = await asyncio.to_thread(start)
        pid = engine.transport.pid
        replica = Replica(spec.replica_id, f"{self._hostname}:{pid}", engine, handle=pid)
        self._replicas[id(replica)] = replica
        return replica

    async def stop_replica(self, replica: Replica) -> None:
        self._replicas.pop(id(replica), None)
        await asyncio.to_thread(replica.engine.shutdown, self._stop_timeout_s)  # type: ignore[attr-defined]

    def list(self) -> list[Replica]:
        return list(self._replicas.values())
