"""Deployments control plane on Fireworks' paths (`/v1/accounts/{account_id}/deployments...`).

Shapes follow the `fireworks-ai` SDK's `Deployment` (camelCase, `name` = full path). A key of
account A sees and changes only A's deployments; admin keys any account's. Mount with no prefix.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from firebox.api.routes.platform_common import PlatformRoute, paginate, principal_dependency
from firebox.platform.auth import Authenticator, Principal
from firebox.platform.errors import InvalidArgumentError
from firebox.platform.times import format_time
from firebox.serving.deployments.control import DeploymentControl, DeploymentFields, DeploymentView

_DEPLOYMENTS = "/v1/accounts/{account_id}/deployments"
_DEPLOYMENT = _DEPLOYMENTS + "/{deployment_id}"


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class DeploymentBody(_CamelModel):
    """The fields firebox acts on; other `Deployment` fields (accelerators, regions, ...) are
    output-only here or have no meaning on this server, and are ignored."""

    base_model: str | None = None
    display_name: str | None = None
    description: str | None = None
    min_replica_count: int | None = None
    max_replica_count: int | None = None
    autoscaling_policy: dict[str, Any] | None = None
    max_context_length: int | None = None

    def fields(self) -> DeploymentFields:
        return DeploymentFields(**self.model_dump())


class ScaleBody(_CamelModel):
    replica_count: int = 0


def _time(value: Any) -> str | None:
    return None if value is None else format_time(value, "microseconds")


def deployment_json(view: DeploymentView) -> dict[str, Any]:
    d, counts = view.record, view.counts
    ready, starting = (counts.ready, counts.starting) if counts else (0, 0)
    return {
        "name": d.name, "displayName": d.display_name, "description": d.description, "baseModel": d.base_model,
        "state": view.state, "status": {"code": view.status[0], "message": view.status[1]},
        "minReplicaCount": d.min_replica_count, "maxReplicaCount": d.max_replica_count,
        "desiredReplicaCount": d.desired_replica_count, "replicaCount": ready + starting,
        "replicaStats": {"pendingSchedulingReplicaCount": 0, "downloadingModelReplicaCount": 0,
                         "initializingReplicaCount": starting, "readyReplicaCount": ready},
        "autoscalingPolicy": view.policy.to_api(), "maxContextLength": d.max_context_length or 0,
        "enableSessionAffinity": True,
        "createTime": _time(d.create_time), "updateTime": _time(d.update_time), "deleteTime": _time(d.delete_time),
    }  # fmt: skip


def deployments_router(control: DeploymentControl, authenticator: Authenticator) -> APIRouter:
    router = APIRouter(route_class=PlatformRoute, tags=["deployments"])
    caller = Depends(principal_dependency(authenticator, refuse_open=True))
    _collection_routes(router, control, caller)
    _custom_method_routes(router, control, caller)  # before `/{id}`: "d1:scale" would match it too
    _item_routes(router, control, caller)
    return router


def _collection_routes(router: APIRouter, control: DeploymentControl, caller: Any) -> None:
    @router.post(_DEPLOYMENTS)
    async def create(account_id: str, body: DeploymentBody, principal: Principal = caller,
                     deployment_id: str | None = Query(default=None, alias="deploymentId"),
                     validate_only: bool = Query(default=False, alias="validateOnly")):
        principal.require_access(account_id)
        if validate_only:
            raise InvalidArgumentError("validateOnly is not supported by firebox")
        return deployment_json(await control.create(principal, account_id, deployment_id, body.fields()))

    @router.get(_DEPLOYMENTS)
    async def list_deployments(account_id: str, principal: Principal = caller,
                               page_size: int | None = Query(default=None, alias="pageSize"),
                               page_token: str | None = Query(default=None, alias="pageToken"),
                               show_deleted: bool = Query(default=False, alias="showDeleted")):
        principal.require_access(account_id)
        views = await control.list(account_id, show_deleted)
        page, next_token = paginate([deployment_json(v) for v in views], page_size, page_token)
        return {"deployments": page, "nextPageToken": next_token, "totalSize": len(views)}


def _custom_method_routes(router: APIRouter, control: DeploymentControl, caller: Any) -> None:
    @router.patch(_DEPLOYMENT + ":scale")
    async def scale(account_id: str, deployment_id: str, principal: Principal = caller,
                    body: ScaleBody = Body(default_factory=ScaleBody)):
        principal.require_access(account_id)
        await control.scale(account_id, deployment_id, body.replica_count)
        return {}

    @router.post(_DEPLOYMENT + ":undelete")
    async def undelete(account_id: str, deployment_id: str, principal: Principal = caller):
        principal.require_access(account_id)
        return deployment_json(await control.undelete(account_id, deployment_id))


def _item_routes(router: APIRouter, control: DeploymentControl, caller: Any) -> None:
    @router.get(_DEPLOYMENT)
    async def get(account_id: str, deployment_id: str, principal: Principal = caller):
        principal.require_access(account_id)
        return deployment_json(await control.get(account_id, deployment_id))

    @router.patch(_DEPLOYMENT)
    async def update(account_id: str, deployment_id: str, body: DeploymentBody, principal: Principal = caller):
        principal.require_access(account_id)
        return deployment_json(await control.update(account_id, deployment_id, body.fields()))

    @router.delete(_DEPLOYMENT)
    async def delete(account_id: str, deployment_id: str, principal: Principal = caller,
                     hard: bool = Query(default=False)):
        principal.require_access(account_id)
        await control.delete(account_id, deployment_id, hard)
        return {}
