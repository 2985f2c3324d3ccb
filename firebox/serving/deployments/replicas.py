"""Replicas and the backend that runs them.

A `Replica` is one engine serving one deployment. Where it runs is the `ReplicaBackend`'s
business: `LocalProcessBackend` (local_backend.py) starts each as an engine process on this
machine, and `LiveDeployment` scales and routes them. A backend whose platform scales and routes
replicas itself is a `DeploymentBackend`: `RayServeBackend` (ray_backend.py) runs each deployment
as a Ray Serve application, with the same routing policy and the deployment's autoscaling fields.
Nothing above this seam (the control plane, the API) changes with the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from firebox.config import DeploymentConfig, EngineConfig
from firebox.engine.describe import ModelDescription
from firebox.engine.types import EngineRequest, ModelInfo, RequestOutput


class ReplicaEngine(Protocol):
    """What a replica's engine offers: an `EngineClient` that can tell whether it still runs."""

    model_info: ModelInfo

    @property
    def is_alive(self) -> bool: ...

    @property
    def stats(self) -> Any: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]: ...

    async def abort(self, request_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What a backend needs to start one replica."""

    deployment: str  # accounts/<a>/deployments/<id>
    replica_id: str  # unique within the deployment, e.g. "r3"
    config: EngineConfig
    description: ModelDescription  # the tokenizer and model info the replica's engine will report


@dataclass(eq=False, slots=True)
class Replica:
    replica_id: str
    host: str  # what `fireworks-backend-host` reports, e.g. "hostname:pid"
    engine: ReplicaEngine
    num_outstanding: int = 0  # engine requests routed here and not finished (the router's count)
    is_draining: bool = False  # scaled away: no new requests; stopped once idle
    config: EngineConfig | None = None  # what it runs; set by its deployment
    handle: Any = field(default=None, repr=False)  # the backend's own (process, actor, pod)

    @property
    def is_routable(self) -> bool:
        return not self.is_draining and self.engine.is_alive


class ReplicaBackend(Protocol):
    """Starts and stops replicas. Implementations: `LocalProcessBackend`; later Kubernetes.
    Methods are called on the event loop and must not block it."""

    async def start_replica(self, spec: ReplicaSpec) -> Replica:
        """Start a replica and return it once it serves; raise if it cannot start."""
        ...

    async def stop_replica(self, replica: Replica) -> None:
        """Stop it (its in-flight requests end with EngineDeadError); kill it if it hangs."""
        ...

    def list(self) -> list[Replica]:
        """Every replica this backend runs."""
        ...


@runtime_checkable
class DeploymentBackend(Protocol):
    """Runs whole deployments whose replicas its platform places, scales and routes (Ray Serve).
    Implementations: `RayServeBackend`."""

    def run_deployment(self, spec: Any, settings: DeploymentConfig, on_change: Any) -> Any:
        """What `LiveDeployment` is to a `ReplicaBackend`: an object answering the same calls
        (start, update, set_desired, acquire, release, counts, close) for `spec` (a
        `DeploymentSpec`); `on_change(it)` whenever its desired count or state moves."""
        ...
