"""`RayDeployment`: a deployment whose replicas Ray Serve runs, as the front server sees it.

It answers what `LiveDeployment` answers (start, update, set_desired, acquire, release, counts,
close), but Ray Serve's controller places and replaces the replicas, Ray's autoscaler sizes them
(`ray_options.autoscaling_config`) and the `PrefixAffinityRouter` of this process's handle picks one
per request. What is left here: pushing the spec to Ray (one push at a time, the latest wins),
taking Ray's view back (the backend polls it for every deployment) and opening each request's
stream.

`acquire` opens the stream and waits for its first item, the replica's `ReplicaTag`: that says
which replica took the request and, when none was running, ends the cold start (reported in
perf_metrics, bounded by `cold_start_timeout_s`). A replica lost before its tag is tried once more
(nothing ran there); one lost later ends the request with EngineDeadError, a 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firebox.config import DeploymentConfig
from firebox.engine.types import EngineDeadError, EngineRequest
from firebox.serving.deployments.errors import DeploymentScalingUpError, DeploymentUnavailableError
from firebox.serving.deployments.live import ReplicaCounts
from firebox.serving.deployments.ray_options import app_name
from firebox.serving.deployments.ray_replica import ReplicaTag
from firebox.serving.deployments.ray_stream import REPLICA_LOST, RequestStream, engine_error
from firebox.serving.deployments.replicas import Replica
from firebox.serving.deployments.spec import DeploymentSpec

if TYPE_CHECKING:
    from firebox.serving.deployments.ray_backend import RayServeBackend

logger = logging.getLogger(__name__)

OnChange = Callable[["RayDeployment"], None]
FAILED_STATUSES = ("DEPLOY_FAILED", "UNHEALTHY")


@dataclass(frozen=True, slots=True)
class RayReplica:
    """One replica as Ray Serve reports it."""

    replica_id: str
    host: str  # "node address:pid"
    state: str  # Ray Serve's: STARTING, RUNNING, STOPPING, ...
    actor_name: str  # in the "serve" namespace


@dataclass(frozen=True, slots=True)
class AppView:
    """A deployment's Ray Serve application, as one poll of the controller saw it."""

    status: str  # RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY, DELETING, ...
    message: str
    target: int | None  # the replica count Ray is heading for
    replicas: tuple[RayReplica, ...]
    fetched_at: float  # time.monotonic() when the poll began


class RayDeployment:
    def __init__(self, spec: DeploymentSpec, backend: RayServeBackend, settings: DeploymentConfig,
                 on_change: OnChange) -> None:
        self.spec = spec
        self.state = spec.state
        self.status = ("OK", "")
        self.replicas: tuple[RayReplica, ...] = ()
        self.served: dict[str, int] = {}  # replica id -> requests it has taken (its own count)
        self.desired = _clamp(spec, spec.desired_replica_count)
        self.last_active = time.monotonic()
        self.settings = settings
        self._backend, self._on_change = backend, on_change
        self._handle: Any = None  # Ray's DeploymentHandle, once the app is deployed
        self._deployed = asyncio.Event()
        self._push_task: asyncio.Task | None = None
        self._dirty = False
        self._pushed_at = 0.0  # polls begun before this are stale
        self._closed = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def app_name(self) -> str:
        return app_name(self.spec)

    def counts(self) -> ReplicaCounts:
        ready = sum(r.state == "RUNNING" for r in self.replicas)
        starting = sum(r.state in ("STARTING", "UPDATING", "RECOVERING") for r in self.replicas)
        return ReplicaCounts(self.desired, ready, starting)

    # --- control --------------------------------------------------------------------------------

    def start(self) -> None:
        self._push()

    async def close(self) -> None:
        """Delete the Ray application (its replicas stop); waiting requests get a 503."""
        self._closed = True
        self._deployed.set()
        if self._push_task is not None:
            await asyncio.gather(self._push_task, return_exceptions=True)
        await self._backend.remove(self)

    def update(self, spec: DeploymentSpec) -> None:
        """New bounds, policy or engine config; a new config rolls the replicas (Ray's rolling
        update; UPDATING until Ray reports the application running again)."""
        if spec.config != self.spec.config:
            self.state = "UPDATING"
        self.spec = spec
        self.set_desired(self.desired)

    def set_desired(self, count: int) -> None:
        self.desired = _clamp(self.spec, count)
        self._on_change(self)
        self._push()

    def observe(self, view: AppView | None) -> None:
        """Ray's view of the application (None: it does not exist), from the backend's poll."""
        if self._closed or self._pushing() or (view is not None and view.fetched_at < self._pushed_at):
            return  # a push is on its way: Ray's figures are about to change
        self.replicas = view.replicas if view is not None else ()
        changed = False
        if view is not None and view.target is not None and view.target != self.desired:
            self.desired, changed = view.target, True
        state, status = self._state_of(view)
        if (state, status) != (self.state, self.status):
            self.state, self.status, changed = state, status, True
        if changed:
            self._on_change(self)

    def _state_of(self, view: AppView | None) -> tuple[str, tuple[str, str]]:
        if view is None:
            return self.state, self.status
        running = any(r.state == "RUNNING" for r in self.replicas)
        if view.status == "RUNNING" or (running and self.state != "UPDATING"):
            return "READY", ("OK", "")
        if view.status in FAILED_STATUSES and not running:
            return "FAILED", ("UNAVAILABLE", _last_line(view.message, view.status))
        return self.state, self.status

    # --- pushing the spec to Ray ----------------------------------------------------------------

    def _pushing(self) -> bool:
        return self._push_task is not None and not self._push_task.done()

    def _push(self) -> None:
        self._dirty = True
        if not self._pushing():
            self._push_task = asyncio.get_running_loop().create_task(self._push_latest())

    async def _push_latest(self) -> None:
        while self._dirty and not self._closed:
            self._dirty = False
            try:
                if self.spec.max_replica_count == 0:  # switched off: Ray has no zero-replica ceiling
                    await self._backend.delete(self)
                else:
                    handle = await self._backend.deploy(self, self.desired)
                    # One handle for good: its router keeps the replicas and the autoscaling config
                    # between pushes, so a request at zero replicas tells Ray's autoscaler at once
                    if self._handle is None:
                        self._handle = handle.options(stream=True)
                    self._deployed.set()
            except Exception as exc:
                logger.exception("deployment %s: Ray Serve refused it", self.name)
                self.state, self.status = "FAILED", ("UNAVAILABLE", _last_line(str(exc), type(exc).__name__))
                self._on_change(self)
            self._pushed_at = time.monotonic()

    # --- requests -------------------------------------------------------------------------------

    async def acquire(self, request: EngineRequest) -> tuple[Replica, float | None]:
        """A lease on the replica that took `request` (its engine: the open stream) and, when no
        replica was running, the seconds until one took it."""
        self._raise_if_unavailable()
        self.last_active = started = time.monotonic()
        deadline = started + self.settings.cold_start_timeout_s
        cold = not any(r.state == "RUNNING" for r in self.replicas)
        for attempt in (1, 2):
            stream = await self._open(request, deadline)
            try:
                tag = await asyncio.wait_for(anext(stream), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                stream.cancel()
                raise DeploymentScalingUpError(f"deployment {self.name} is scaling up; retry shortly") from None
            except REPLICA_LOST:
                if attempt == 2:
                    raise EngineDeadError(f"the replicas of deployment {self.name} were lost; retry") from None
                continue
            except Exception as exc:
                raise engine_error(exc, f"(not known yet) of {self.name}") from None
            break
        assert isinstance(tag, ReplicaTag)
        self.served[tag.replica_id] = max(self.served.get(tag.replica_id, 0), tag.num_served)
        lease = Replica(tag.replica_id, tag.host, RequestStream(self.spec.description.info, stream, tag.host),
                        num_outstanding=tag.num_ongoing, handle=stream)  # fmt: skip
        return lease, (time.monotonic() - started) if cold else None

    def release(self, replica: Replica) -> None:
        self.last_active = time.monotonic()

    async def _open(self, request: EngineRequest, deadline: float) -> Any:
        if self._handle is None:  # the first push is still on its way to Ray
            try:
                await asyncio.wait_for(self._deployed.wait(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise DeploymentScalingUpError(f"deployment {self.name} is being created; retry shortly") from None
            self._raise_if_unavailable()
            if self._handle is None:
                raise DeploymentUnavailableError(f"deployment {self.name} is not deployed on Ray: {self.status[1]}")
        return self._handle.generate.remote(request)

    def _raise_if_unavailable(self) -> None:
        if self._closed:
            raise DeploymentUnavailableError(f"deployment {self.name} is being deleted")
        if self.spec.max_replica_count == 0:
            raise DeploymentUnavailableError(f"deployment {self.name} is switched off (maxReplicaCount is 0)")
        if self.state == "FAILED" and not any(r.state == "RUNNING" for r in self.replicas):
            raise DeploymentUnavailableError(f"deployment {self.name} cannot start a replica: {self.status[1]}")


def _clamp(spec: DeploymentSpec, count: int) -> int:
    return max(spec.min_replica_count, min(spec.max_replica_count, count))


def _last_line(text: str, default: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else default
