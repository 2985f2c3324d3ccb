"""`LocalProcessBackend`: each replica an engine in a child process of this server."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from firebox.serving.deployments.replicas import Replica, ReplicaSpec

STOP_WORKERS = 4


class LocalProcessBackend:
    """Replicas as local engine processes. `build` is what the child runs to build its engine
    core (default: `build.build_core`; tests pass a fake). Loading and stopping happen off the
    event loop, in pools of their own: at most `max_concurrent_starts` replicas load at once, and
    a burst of start-ups never takes the threads of the loop's default executor, which serves
    key lookups and the database."""

    def __init__(self, build: Any = None, start_timeout_s: float = 600.0, stop_timeout_s: float = 10.0,
                 max_concurrent_starts: int = 2) -> None:
        self._build = build
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._hostname = socket.gethostname()
        self._replicas: dict[int, Replica] = {}
        self._starts = ThreadPoolExecutor(max_concurrent_starts, thread_name_prefix="firebox-replica-start")
        self._stops = ThreadPoolExecutor(STOP_WORKERS, thread_name_prefix="firebox-replica-stop")

    async def start_replica(self, spec: ReplicaSpec) -> Replica:
        from firebox.engine.build import build_core  # the engine side: only once a replica starts
        from firebox.engine.process import launch_process_engine

        def start() -> Any:
            launch = launch_process_engine(spec.config, build=self._build or build_core)
            return launch.wait(description=spec.description, timeout=self._start_timeout_s)

        engine = await asyncio.get_running_loop().run_in_executor(self._starts, start)
        pid = engine.transport.pid
        replica = Replica(spec.replica_id, f"{self._hostname}:{pid}", engine, handle=pid)
        self._replicas[id(replica)] = replica
        return replica

    async def stop_replica(self, replica: Replica) -> None:
        self._replicas.pop(id(replica), None)
        shutdown = replica.engine.shutdown  # type: ignore[attr-defined]
        await asyncio.get_running_loop().run_in_executor(self._stops, shutdown, self._stop_timeout_s)

    def list(self) -> list[Replica]:
        return list(self._replicas.values())
