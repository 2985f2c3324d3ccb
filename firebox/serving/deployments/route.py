"""`DeploymentRoute`: the engine that one deployment-addressed request sees.

Each of its engine requests goes to the replica the deployment picks (waiting for a cold start if
there is none). It keeps what the response headers report: the replica's host, the requests in
flight there, and how long the request waited for a replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from firebox.engine.types import EngineRequest, RequestOutput
from firebox.serving.deployments.live import LiveDeployment
from firebox.serving.deployments.replicas import Replica
from firebox.serving.generation.fanout import aclose_quietly


class DeploymentRoute:
    """An `EngineClient` over a deployment's replicas, for the engine requests of one API request."""

    def __init__(self, deployment: LiveDeployment) -> None:
        self.model_info = deployment.spec.description.info
        self.tokenizer = deployment.spec.description.tokenizer
        self._deployment = deployment
        self._replicas: dict[str, Replica] = {}  # request id -> where it runs
        self._host: str | None = None
        self._num_concurrent: int | None = None
        self._cold_start_s: float | None = None

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        replica, waited = await self._deployment.acquire(request)
        self._note(replica, waited)
        self._replicas[request.request_id] = replica
        stream = replica.engine.generate(request)
        try:
            async for output in stream:
                yield output
        finally:
            await aclose_quietly(stream)
            self._replicas.pop(request.request_id, None)
            self._deployment.release(replica)

    async def abort(self, request_id: str) -> None:
        replica = self._replicas.get(request_id)
        if replica is not None:
            await replica.engine.abort(request_id)

    def perf_metrics(self) -> dict[str, Any]:
        """`fireworks-deployment`, `-backend-host`, `-num-concurrent-requests` and, after a cold
        start, `-deployment-cold-start-duration` (seconds)."""
        metrics: dict[str, Any] = {"deployment": self._deployment.name}
        if self._host is not None:
            metrics["backend-host"] = self._host
            metrics["num-concurrent-requests"] = self._num_concurrent
        if self._cold_start_s is not None:
            metrics["deployment-cold-start-duration"] = round(self._cold_start_s, 6)
        return metrics

    def _note(self, replica: Replica, waited: float | None) -> None:
        if self._host is None:  # the first engine request's replica speaks for the request
            self._host, self._num_concurrent = replica.host, replica.num_outstanding
        if waited is not None:
            self._cold_start_s = max(self._cold_start_s or 0.0, waited)
