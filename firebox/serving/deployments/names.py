"""Deployment addresses in a request's `model`, resolved to the deployment's replicas.

Accepted forms: `accounts/<a>/deployments/<id>`, `<model>#accounts/<a>/deployments/<id>` and
`<model>#<id>` (the model may be short: the caller's account first, then the default one). A
model that no shared pool serves but that has a deployment goes to its oldest deployment in the
caller's account (else the oldest of any, which only an admin may use), as the hosted API routes
a bare model name to the model's default deployment. The response's `model` echoes the string
that was asked for.
"""

from __future__ import annotations

from firebox.serving.deployments.live import LiveDeployment
from firebox.serving.deployments.manager import DeploymentManager
from firebox.serving.deployments.route import DeploymentRoute
from firebox.serving.errors import ModelNotFoundError
from firebox.serving.registry import ModelHandle, ModelRegistry, ServedModel, split_deployment_name


class DeploymentResolver:
    """The `NameResolver` for deployment addresses (register with `ModelRegistry.add_resolver`)."""

    def __init__(self, manager: DeploymentManager) -> None:
        self._manager = manager

    def resolve(self, name: str, registry: ModelRegistry, account_id: str | None) -> ModelHandle | None:
        name = name.strip()
        model_part, has_model, deployment_part = name.rpartition("#")
        if not has_model:
            return self._without_model(name, registry, account_id)
        for model in registry.full_names(model_part, account_id):
            deployment = self._deployment(deployment_part.strip(), model, account_id)
            if deployment is not None and deployment.spec.base_model == model:
                return _handle(name, deployment)
        raise ModelNotFoundError(name)

    def _without_model(self, name: str, registry: ModelRegistry, account_id: str | None) -> ModelHandle | None:
        if split_deployment_name(name) is not None:
            deployment = self._manager.get(name)
            if deployment is None:
                raise ModelNotFoundError(name)
            return _handle(name, deployment)
        for model in registry.full_names(name, account_id):
            if registry.get(model) is not None:
                return None  # the shared pool serves it
            if (deployment := self._manager.default_for(model, account_id)) is not None:
                return _handle(name, deployment)
        return None

    def _deployment(self, deployment: str, model: str, account_id: str | None) -> LiveDeployment | None:
        if split_deployment_name(deployment) is not None:
            return self._manager.get(deployment)
        return None if "/" in deployment else self._manager.find(deployment, model, account_id)


def _handle(name: str, deployment: LiveDeployment) -> ModelHandle:
    route = DeploymentRoute(deployment)
    served = ServedModel(deployment.spec.base_model, route, public=False)
    return ModelHandle(name, served, deployment=deployment.name, route_metrics=route.perf_metrics)
