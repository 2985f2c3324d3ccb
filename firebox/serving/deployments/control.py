"""`DeploymentControl`: the deployments control plane behind the REST routes.

It keeps the platform database (the declared state, which survives restarts) and the replica
manager (what runs) in step: create/patch/scale/delete/undelete write the row and then tell the
manager; the manager's own changes (autoscaled desired count, READY/FAILED) are written back by
one writer task. All database calls run off the event loop, one at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firebox.config import DeploymentConfig
from firebox.platform.deployments import Deployment, DeploymentStore
from firebox.platform.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from firebox.serving.auth import Principal
from firebox.serving.deployments.caps import (
    check_account_room,
    check_replica_bounds,
    check_total_floor,
    held_to_caps,
    over_account_cap,
)
from firebox.serving.deployments.catalog_models import CatalogModels
from firebox.serving.deployments.live import LiveDeployment, ReplicaCounts
from firebox.serving.deployments.manager import DeploymentManager
from firebox.serving.deployments.policy import AutoscalingPolicy
from firebox.serving.deployments.replicas import DeploymentBackend, ReplicaBackend
from firebox.serving.deployments.spec import DeploymentSpec

logger = logging.getLogger(__name__)

RUNNING_STATES = ("CREATING", "READY", "FAILED")


@dataclass(frozen=True, slots=True)
class DeploymentFields:
    """The writable fields of a create or patch body; None: not given."""

    base_model: str | None = None
    display_name: str | None = None
    description: str | None = None
    min_replica_count: int | None = None
    max_replica_count: int | None = None
    autoscaling_policy: Mapping[str, Any] | None = None
    max_context_length: int | None = None


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """A stored deployment with its live figures (None while nothing runs it)."""

    record: Deployment
    policy: AutoscalingPolicy
    state: str
    status: tuple[str, str]
    counts: ReplicaCounts | None


class DeploymentControl:
    def __init__(self, store: DeploymentStore, models: CatalogModels, backend: ReplicaBackend | DeploymentBackend,
                 settings: DeploymentConfig | None = None) -> None:
        self.store = store
        self.models = models
        self.manager = DeploymentManager(backend, settings, on_change=self._changed)
        self._write_lock = asyncio.Lock()
        self._dirty: dict[str, None] = {}
        self._writer: asyncio.Task | None = None

    # --- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Run every stored deployment again (replicas back to their desired count) and create the
        catalog's deployments that do not exist yet."""
        per_account: dict[str, int] = {}
        for record in await asyncio.to_thread(self.store.list, None, False):
            try:
                if over_account_cap(record.account_id, per_account, self.manager.settings):
                    raise ResourceExhaustedError(f"over this server's limit of "
                                                 f"{self.manager.settings.max_deployments_per_account} deployments "
                                                 f"per account")  # fmt: skip
                self.manager.deploy(await self._spec(await self._held_to_caps(record)))
            except (InvalidArgumentError, ResourceExhaustedError) as exc:
                logger.error("deployment %s cannot run: %s", record.name, exc)
                await self._write(record.account_id, record.deployment_id, state="FAILED",
                                  status_code="FAILED_PRECONDITION" if isinstance(exc, InvalidArgumentError)
                                  else exc.code, status_message=str(exc))  # fmt: skip
        for model in self.models:
            for entry in model.deployments:
                if not await self._exists(entry.account, entry.deployment_id):
                    fields = DeploymentFields(model.name, entry.display_name, "", entry.min_replica_count,
                                              entry.max_replica_count, entry.autoscaling_policy)
                    await self.create(None, entry.account, entry.deployment_id, fields)

    async def close(self) -> None:
        await self.manager.close()
        if self._writer is not None:
            await self._writer

    # --- the control plane ----------------------------------------------------------------------

    async def create(self, principal: Principal | None, account_id: str, deployment_id: str | None,
                     fields: DeploymentFields) -> DeploymentView:
        """`principal` None: the operator (catalog deployments)."""
        model = self._model_for(principal, fields.base_model)
        record = Deployment(account_id, deployment_id or secrets.token_hex(4), model.name, state="CREATING")
        record = _apply(record, dataclasses.replace(fields, autoscaling_policy=fields.autoscaling_policy or {}))
        record = dataclasses.replace(record, desired_replica_count=_initial_replicas(record))
        await self._check_caps(record, is_new=True)
        spec = await self._spec(record)
        async with self._write_lock:
            record = await asyncio.to_thread(self.store.create, record)
        return self._view(record, self.manager.deploy(spec))

    async def get(self, account_id: str, deployment_id: str) -> DeploymentView:
        record = await asyncio.to_thread(self.store.get, account_id, deployment_id)
        return self._view(record, self.manager.get(record.name))

    async def list(self, account_id: str, show_deleted: bool) -> list[DeploymentView]:
        records = await asyncio.to_thread(self.store.list, account_id, show_deleted)
        return [self._view(r, self.manager.get(r.name)) for r in records]

    async def update(self, account_id: str, deployment_id: str, fields: DeploymentFields) -> DeploymentView:
        record = await self._running_record(account_id, deployment_id)
        if fields.base_model and self.models.registry.full_name(fields.base_model) != record.base_model:
            raise InvalidArgumentError("baseModel of a deployment cannot change; create another deployment")
        record = _apply(record, fields)
        await self._check_caps(record, is_new=False)
        spec = await self._spec(record)
        record = await self._write(account_id, deployment_id, **_declared(record))
        return self._view(record, self.manager.deploy(spec))

    async def scale(self, account_id: str, deployment_id: str, replica_count: int) -> DeploymentView:
        record = await self._running_record(account_id, deployment_id)
        if not record.min_replica_count <= replica_count <= record.max_replica_count:
            raise InvalidArgumentError(f"replicaCount must be within [minReplicaCount, maxReplicaCount] = "
                                       f"[{record.min_replica_count}, {record.max_replica_count}]")
        live = self.manager.get(record.name)
        if live is None:
            raise InvalidArgumentError(f"deployment {record.name} is not running: {record.status_message}")
        live.set_desired(replica_count)
        return self._view(record, live)

    async def delete(self, account_id: str, deployment_id: str, hard: bool) -> None:
        record = await asyncio.to_thread(self.store.get, account_id, deployment_id)
        if not record.is_deleted:
            await self._write(account_id, deployment_id, state="DELETING")
        await self.manager.remove(record.name)
        async with self._write_lock:
            delete = self.store.hard_delete if hard else self.store.soft_delete
            await asyncio.to_thread(delete, account_id, deployment_id)

    async def undelete(self, account_id: str, deployment_id: str) -> DeploymentView:
        record = await asyncio.to_thread(self.store.get, account_id, deployment_id)
        if not record.is_deleted:
            raise InvalidArgumentError(f"deployment {record.name} is not deleted")
        record = dataclasses.replace(record, state="CREATING", desired_replica_count=_initial_replicas(record))
        await self._check_caps(record, is_new=True)
        spec = await self._spec(record)
        async with self._write_lock:
            await asyncio.to_thread(self.store.undelete, account_id, deployment_id, "CREATING")
        record = await self._write(account_id, deployment_id, desired_replica_count=record.desired_replica_count)
        return self._view(record, self.manager.deploy(spec))

    def deployments_of(self, model_name: str) -> list[LiveDeployment]:
        return [d for d in self.manager if d.spec.base_model == model_name]

    # --- helpers --------------------------------------------------------------------------------

    def _model_for(self, principal: Principal | None, base_model: str | None):
        if not base_model:
            raise InvalidArgumentError("baseModel is required")
        model = self.models.get(base_model)
        visible = model is not None and (principal is None or model.is_public or principal.is_admin
                                         or principal.account_id == model.account)  # fmt: skip
        if not visible:
            raise NotFoundError(f"model {base_model!r} is not in this server's catalog")
        return model

    async def _spec(self, record: Deployment) -> DeploymentSpec:
        model = self.models.get(record.base_model)
        if model is None:
            raise InvalidArgumentError(f"base model {record.base_model!r} is not in this server's catalog")
        try:
            policy = AutoscalingPolicy.from_api(record.autoscaling_policy)
            config = self.models.engine_config(model, record.max_context_length)
            description = await self.models.description(config)
            state = record.state if record.state in RUNNING_STATES else "CREATING"
            return DeploymentSpec(record.account_id, record.deployment_id, record.base_model,
                                  record.min_replica_count, record.max_replica_count, record.desired_replica_count,
                                  policy, config, description, state)  # fmt: skip
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc

    async def _check_caps(self, record: Deployment, is_new: bool) -> None:
        """400 over the replicas one deployment may have, 429 over the account's deployments or
        the replicas every deployment keeps running (see caps.py)."""
        settings = self.manager.settings
        check_replica_bounds(record, settings)
        if is_new:
            existing = await asyncio.to_thread(self.store.list, record.account_id, False)
            check_account_room(record.account_id, len(existing), settings)
        others_floor = sum(d.spec.min_replica_count for d in self.manager if d.name != record.name)
        check_total_floor(record, others_floor, settings)

    async def _held_to_caps(self, record: Deployment) -> Deployment:
        """A stored deployment cut to this server's replica limit (and stored so)."""
        capped = held_to_caps(record, self.manager.settings)
        if capped == record:
            return record
        logger.warning("deployment %s asks for %d-%d replicas; held to this server's limit of %d", record.name,
                       record.min_replica_count, record.max_replica_count, capped.max_replica_count)
        bounds = ("min_replica_count", "max_replica_count", "desired_replica_count")
        return await self._write(record.account_id, record.deployment_id, **{f: getattr(capped, f) for f in bounds})

    async def _running_record(self, account_id: str, deployment_id: str) -> Deployment:
        record = await asyncio.to_thread(self.store.get, account_id, deployment_id)
        if record.is_deleted:
            raise InvalidArgumentError(f"deployment {record.name} is deleted; undelete it first")
        return record

    async def _exists(self, account_id: str, deployment_id: str) -> bool:
        try:
            await asyncio.to_thread(self.store.get, account_id, deployment_id)
        except NotFoundError:
            return False
        return True

    async def _write(self, account_id: str, deployment_id: str, **fields: Any) -> Deployment:
        async with self._write_lock:
            return await asyncio.to_thread(self.store.update, account_id, deployment_id, **fields)

    def _changed(self, live: LiveDeployment) -> None:
        """The manager moved a deployment (desired count, state): write it back, latest wins."""
        self._dirty[live.name] = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_back())

    async def _write_back(self) -> None:
        while self._dirty:
            name = next(iter(self._dirty))
            del self._dirty[name]
            live = self.manager.get(name)
            if live is None:
                continue
            try:
                await self._write(live.spec.account_id, live.spec.deployment_id, desired_replica_count=live.desired,
                                  state=live.state, status_code=live.status[0], status_message=live.status[1])
            except Exception:
                logger.exception("could not store the state of deployment %s", name)

    def _view(self, record: Deployment, live: LiveDeployment | None) -> DeploymentView:
        policy = AutoscalingPolicy.from_api(record.autoscaling_policy)
        if live is None or record.is_deleted:
            return DeploymentView(record, policy, record.state, (record.status_code, record.status_message), None)
        record = dataclasses.replace(record, desired_replica_count=live.desired)
        return DeploymentView(record, live.spec.policy, live.state, live.status, live.counts())


def _apply(record: Deployment, fields: DeploymentFields) -> Deployment:
    """`record` with the given fields; validated (InvalidArgumentError) except for the policy."""
    changes = {f.name: getattr(fields, f.name) for f in dataclasses.fields(fields)
               if getattr(fields, f.name) is not None and f.name != "base_model"}  # fmt: skip
    if "autoscaling_policy" in changes:
        try:
            changes["autoscaling_policy"] = AutoscalingPolicy.from_api(changes["autoscaling_policy"]).to_api()
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from exc
    if changes.get("max_context_length") == 0:
        changes["max_context_length"] = None
    if "min_replica_count" in changes and "max_replica_count" not in changes:
        changes["max_replica_count"] = max(record.max_replica_count, changes["min_replica_count"])
    updated = dataclasses.replace(record, **changes)
    if not 0 <= updated.min_replica_count <= updated.max_replica_count:
        raise InvalidArgumentError("replica counts must satisfy 0 <= minReplicaCount <= maxReplicaCount")
    if len(updated.display_name) >= 64:
        raise InvalidArgumentError("displayName must be fewer than 64 characters")
    if updated.max_context_length is not None and updated.max_context_length < 0:
        raise InvalidArgumentError("maxContextLength must be >= 0")
    desired = min(max(updated.desired_replica_count, updated.min_replica_count), updated.max_replica_count)
    return dataclasses.replace(updated, desired_replica_count=desired)


def _initial_replicas(record: Deployment) -> int:
    """A new (or undeleted) deployment comes up with one replica, or its minimum."""
    return min(max(record.min_replica_count, 1), record.max_replica_count)


def _declared(record: Deployment) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ("display_name", "description", "min_replica_count",
                                                      "max_replica_count", "autoscaling_policy",
                                                      "max_context_length", "desired_replica_count")}
