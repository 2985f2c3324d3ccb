"""`LiveDeployment`: one deployment's replicas, kept at the desired count, and the door requests
come through.

A reconcile loop (one task per deployment) wakes on every change and at least every tick:
replaces replicas whose engine died, lets the autoscaler move the desired count, starts what is
missing (backing off after failures), drains surplus replicas (no new requests) and stops them
once their requests are done. `acquire` picks a replica for a request, or, at zero replicas,
asks for one and waits for it (the cold start), bounded by `cold_start_timeout_s`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from firebox.config import DeploymentConfig
from firebox.engine.types import EngineRequest
from firebox.serving.deployments.autoscaler import LoadSample, ScaleBounds, ScaleState, decide
from firebox.serving.deployments.budget import ReplicaBudget
from firebox.serving.deployments.errors import DeploymentScalingUpError, DeploymentUnavailableError
from firebox.serving.deployments.replicas import Replica, ReplicaBackend, ReplicaSpec
from firebox.serving.deployments.router import affinity_key, pick_replica
from firebox.serving.deployments.spec import DeploymentSpec

logger = logging.getLogger(__name__)

MAX_RESTART_BACKOFF_S = 30.0
OnChange = Callable[["LiveDeployment"], None]


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    desired: int
    ready: int
    starting: int


class LiveDeployment:
    def __init__(self, spec: DeploymentSpec, backend: ReplicaBackend, settings: DeploymentConfig,
                 on_change: OnChange, budget: ReplicaBudget | None = None) -> None:
        self.spec = spec
        self._budget = budget or ReplicaBudget(None)  # shared by the manager's deployments
        self.state = spec.state
        self.status = ("OK", "")  # (code, message) of the last replica operation
        self.replicas: list[Replica] = []
        self.num_starting = 0
        self.num_waiting = 0  # requests waiting for a replica
        self.last_active = time.monotonic()
        self._backend, self._settings, self._on_change = backend, settings, on_change
        self.desired = self._bounds().clamp(spec.desired_replica_count)
        self._scale = ScaleState()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # replaced after each set: a new generation of waiters
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._replica_seq = itertools.count(1)
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: str | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self.spec.name

    def counts(self) -> ReplicaCounts:
        ready = sum(1 for r in self.replicas if r.is_routable)
        return ReplicaCounts(self.desired, ready, self.num_starting)

    # --- control --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reconcile loop (on the running event loop)."""
        self._loop_task = asyncio.create_task(self._run(), name=f"deployment {self.name}")

    async def close(self) -> None:
        """Stop the loop, wait for replicas still starting, then stop every replica."""
        self._closed = True
        self._wake.set()
        self._notify()
        if self._loop_task is not None:
            await self._loop_task
        await asyncio.gather(*self._tasks, return_exceptions=True)
        replicas, self.replicas = self.replicas, []
        await asyncio.gather(*(self._stop(r) for r in replicas))

    def update(self, spec: DeploymentSpec) -> None:
        """New bounds, policy or engine config. A new config replaces every replica: the old ones
        drain while the new ones load (UPDATING until one is ready)."""
        if spec.config != self.spec.config:
            for replica in self.replicas:
                replica.is_draining = True
            self.state = "UPDATING"
        self.spec = spec
        self.set_desired(self.desired)

    def set_desired(self, count: int) -> None:
        self.desired = self._bounds().clamp(count)
        self._scale = ScaleState()
        self._wake.set()
        self._on_change(self)

    # --- requests -------------------------------------------------------------------------------

    async def acquire(self, request: EngineRequest) -> tuple[Replica, float | None]:
        """A replica for `request` (counted as outstanding until `release`) and, when it had to
        wait for one, the seconds it waited."""
        key = affinity_key(request, self._settings.prefix_affinity_tokens)
        self.last_active = time.monotonic()
        waited = None
        replica = pick_replica(self.replicas, key, self._settings.affinity_slack)
        if replica is None:
            started = time.monotonic()
            replica = await self._wait_for_replica(key)
            waited = time.monotonic() - started
        replica.num_outstanding += 1
        return replica, waited

    def release(self, replica: Replica) -> None:
        replica.num_outstanding -= 1
        self.last_active = time.monotonic()
        if replica.is_draining or not replica.engine.is_alive:
            self._wake.set()

    async def _wait_for_replica(self, key: bytes) -> Replica:
        if self.spec.max_replica_count == 0:
            raise DeploymentUnavailableError(f"deployment {self.name} is switched off (maxReplicaCount is 0)")
        deadline = time.monotonic() + self._settings.cold_start_timeout_s
        self.num_waiting += 1
        try:
            self._ask_for_capacity()
            while (replica := pick_replica(self.replicas, key, self._settings.affinity_slack)) is None:
                self._raise_if_hopeless()
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
                except TimeoutError:
                    budget = self._budget
                    full = f" (this server runs its limit of {budget.limit} replicas)" if budget.is_full else ""
                    raise DeploymentScalingUpError(
                        f"deployment {self.name} is scaling up from zero replicas{full}; retry shortly"
                    ) from None
            return replica
        finally:
            self.num_waiting -= 1

    def _raise_if_hopeless(self) -> None:
        if self._closed:
            raise DeploymentUnavailableError(f"deployment {self.name} is being deleted")
        if self._last_error is not None and self.num_starting == 0:
            raise DeploymentUnavailableError(f"deployment {self.name} cannot start a replica: {self._last_error}")

    def _ask_for_capacity(self) -> None:
        """A request is waiting and no replica is running: start one now, not after a window."""
        if self.desired == 0:
            self.set_desired(1)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the reconcile loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            try:
                self._reconcile(time.monotonic())
            except Exception:
                logger.exception("deployment %s: reconcile failed", self.name)
            try:
                await asyncio.wait_for(self._wake.wait(), self._tick_s())
            except TimeoutError:
                pass
            self._wake.clear()

    def _reconcile(self, now: float) -> None:
        self._reap_dead()
        self._autoscale(now)
        self._start_missing(now)
        self._drain_surplus()
        self._stop_drained()
        self._update_state()

    def _reap_dead(self) -> None:
        for replica in [r for r in self.replicas if not r.engine.is_alive]:
            logger.warning("deployment %s: replica %s (%s) died; replacing it", self.name,
                           replica.replica_id, replica.host)
            self.replicas.remove(replica)
            self._spawn(self._stop(replica))

    def _autoscale(self, now: float) -> None:
        num_in_flight = sum(r.num_outstanding for r in self.replicas) + self.num_waiting
        if num_in_flight:
            self.last_active = now
        load = LoadSample(now, num_in_flight, self.last_active)
        desired = decide(self.spec.policy, self._bounds(), self.desired, load, self._scale)
        if desired != self.desired:
            logger.info("deployment %s: scaling %d -> %d replicas (%d in flight)", self.name, self.desired,
                        desired, num_in_flight)
            self.desired = desired
            self._on_change(self)

    def _start_missing(self, now: float) -> None:
        draining = [r for r in self.replicas if r.is_draining and r.engine.is_alive]
        active = len(self.replicas) - len(draining)
        missing = self.desired - active - self.num_starting
        for replica in draining[:max(missing, 0)]:
            if replica.config == self.spec.config:
                replica.is_draining = False  # wanted again before it stopped
                missing -= 1
        if missing > 0 and now >= self._retry_at:
            for _ in range(self._budget.take(missing)):  # the rest waits for room under --max-replicas
                self._spawn(self._start_one())

    def _drain_surplus(self) -> None:
        active = [r for r in self.replicas if not r.is_draining]
        surplus = len(active) - self.desired
        for replica in sorted(active, key=lambda r: r.num_outstanding)[:max(surplus, 0)]:
            replica.is_draining = True

    def _stop_drained(self) -> None:
        for replica in [r for r in self.replicas if r.is_draining and r.num_outstanding == 0]:
            self.replicas.remove(replica)
            self._spawn(self._stop(replica))

    def _update_state(self) -> None:
        if any(r.is_routable for r in self.replicas) or (self.desired == 0 and self._last_error is None):
            state, status = "READY", ("OK", "")
        elif self._last_error is not None:
            state, status = "FAILED", ("UNAVAILABLE", self._last_error)
        else:
            state, status = self.state, self.status
        if (state, status) != (self.state, self.status):
            self.state, self.status = state, status
            self._on_change(self)

    async def _start_one(self) -> None:
        config = self.spec.config
        spec = ReplicaSpec(self.name, f"r{next(self._replica_seq)}", config, self.spec.description)
        self.num_starting += 1
        try:
            replica = await self._backend.start_replica(spec)
        except Exception as exc:
            self._budget.give_back()
            self._start_failed(exc)
            return
        finally:
            self.num_starting -= 1
            self._wake.set()
        replica.config = config
        if self._closed or config != self.spec.config:  # deleted, or reconfigured while it loaded
            await self._stop(replica)
            return
        self._failures, self._last_error = 0, None
        self.last_active = time.monotonic()  # a new replica gets a whole idle window before it goes
        self.replicas.append(replica)
        logger.info("deployment %s: replica %s ready on %s", self.name, replica.replica_id, replica.host)
        self._notify()

    def _start_failed(self, exc: Exception) -> None:
        self._failures += 1
        delay = min(self._settings.restart_backoff_s * 2 ** (self._failures - 1), MAX_RESTART_BACKOFF_S)
        self._retry_at = time.monotonic() + delay
        self._last_error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        logger.error("deployment %s: a replica failed to start (retry in %.1fs): %s", self.name, delay, exc)
        self._notify()

    async def _stop(self, replica: Replica) -> None:
        try:
            await self._backend.stop_replica(replica)
        except Exception:
            logger.exception("deployment %s: replica %s did not stop cleanly", self.name, replica.replica_id)
        finally:
            self._budget.give_back()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bounds(self) -> ScaleBounds:
        max_num_seqs = self.spec.config.scheduler.max_num_seqs
        return ScaleBounds(self.spec.min_replica_count, self.spec.max_replica_count,
                           self.spec.policy.concurrency_target(max_num_seqs))

    def _tick_s(self) -> float:
        policy = self.spec.policy
        shortest = min(policy.scale_up_window_s, policy.scale_down_window_s, policy.scale_to_zero_window_s)
        return min(max(shortest / 4, 0.02), 1.0)
