"""`GET /v1/accounts/{account_id}/models[/{model_id}]`: the catalog in Fireworks' `Model` shape.

An account's own models are listed for its keys; other accounts see only its public models
(so every key can list `accounts/fireworks/models`). `deployedModelRefs` names the deployments of
the model that the caller may use.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from firebox.api.routes.platform_common import PlatformRoute, paginate, principal_dependency
from firebox.catalog import CatalogModel
from firebox.platform.auth import Authenticator, Principal
from firebox.platform.errors import NotFoundError
from firebox.platform.times import format_time, utcnow
from firebox.serving.deployments.control import DeploymentControl

_OK = {"code": "OK", "message": ""}


def model_json(model: CatalogModel, info: Any, tokenizer: Any, refs: list[dict[str, Any]], created: str) -> dict:
    body: dict[str, Any] = {
        "name": model.name, "displayName": model.display_name or model.model_id, "description": model.description,
        "kind": "HF_BASE_MODEL", "state": "READY", "status": _OK, "public": model.is_public,
        "contextLength": info.max_model_len, "supportsServerless": model.serverless, "supportsTools": False,
        "supportsImageInput": False, "supportsLora": False, "tunable": False,
        "defaultSamplingParams": {k: float(v) for k, v in info.generation_defaults.items()},
        "baseModelDetails": {"checkpointFormat": "HUGGINGFACE", "modelType": info.architecture, "worldSize": 1,
                             "moe": False, "tunable": False, "supportsFireattention": False},
        "deployedModelRefs": refs, "createTime": created, "updateTime": created,
    }  # fmt: skip
    if tokenizer.chat_template:
        body["conversationConfig"] = {"style": "jinja", "template": tokenizer.chat_template}
    return body


def model_catalog_router(control: DeploymentControl, authenticator: Authenticator) -> APIRouter:
    router = APIRouter(route_class=PlatformRoute, tags=["models"])
    caller = Depends(principal_dependency(authenticator))
    created = format_time(utcnow(), "microseconds")

    def visible(principal: Principal, account_id: str) -> list[CatalogModel]:
        return [m for m in control.models if m.account == account_id
                and (m.is_public or principal.can_access(account_id))]  # fmt: skip

    async def render(principal: Principal, model: CatalogModel) -> dict[str, Any]:
        description = await control.models.description(control.models.engine_config(model))
        refs = [{"name": f"accounts/{d.spec.account_id}/deployedModels/{d.spec.deployment_id}",
                 "deployment": d.name, "state": "DEPLOYED", "default": i == 0, "public": False}
                for i, d in enumerate(control.deployments_of(model.name))
                if principal.can_access(d.spec.account_id)]  # fmt: skip
        return model_json(model, description.info, description.tokenizer, refs, created)

    @router.get("/v1/accounts/{account_id}/models")
    async def list_models(account_id: str, principal: Principal = caller,
                          page_size: int | None = Query(default=None, alias="pageSize"),
                          page_token: str | None = Query(default=None, alias="pageToken")):
        models = sorted(visible(principal, account_id), key=lambda m: m.name)
        page, next_token = paginate(models, page_size, page_token)
        return {"models": [await render(principal, m) for m in page], "nextPageToken": next_token,
                "totalSize": len(models)}

    @router.get("/v1/accounts/{account_id}/models/{model_id}")
    async def get_model(account_id: str, model_id: str, principal: Principal = caller):
        model = next((m for m in visible(principal, account_id) if m.model_id == model_id), None)
        if model is None:
            raise NotFoundError(f"model accounts/{account_id}/models/{model_id} not found")
        return await render(principal, model)

    return router
