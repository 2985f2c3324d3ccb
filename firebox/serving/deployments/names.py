"""Deployment addresses in a request's `model`, resolved to the deployment's replicas.

Accepted forms: `accounts/<a>/deployments/<id>`, `<model>#accounts/<a>/deployments/<id>` and
`<model>#<id>` (the model may be short). A model that no shared pool serves but that has a
deployment goes to its oldest deployment, as the hosted API routes a bare model name to the
model's default deployment. The response's `model` echoes the string that was asked for.
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

    def resolve(self, name: str, registry: ModelRegistry) -> ModelHandle | None:
        name = name.strip()
        model_part, has_model, deployment_part = name.rpartition("#")
        if not has_model:
            return self._without_model(name, registry)
        model = registry.full_name(model_part.strip())
        deployment = self._deployment(deployment_part.strip(), model)
        if deployment is None or deployment.spec.base_model != model:
            raise ModelNotFoundError(name)
        return _handle(name, deployment)

    def _without_model(self, name: str, registry: ModelRegistry) -> ModelHandle | None:
        if split_deployment_name(name) is not None:
            deployment = self._manager.get(name)
            if deployment is None:
                raise ModelNotFoundError(name)
            return _handle(name, deployment)
        if registry.get(name) is not None:
            return None  # the shared pool serves it
        deployment = self._manager.default_for(registry.full_name(name))
        return None if deployment is None else _handle(name, deployment)

    def _deployment(self, deployment: str, model: str) -> LiveDeployment | None:
        if split_deployment_name(deployment) is not None:
            return self._manager.get(deployment)
        return None if "/" in deployment else self._manager.find(deployment, model)


def _handle(name: str, deployment: LiveDeployment) -> ModelHandle:
    route = DeploymentRoute(deployment)
    served = ServedModel(deployment.spec.base_model, route, public=False)
    return ModelHandle(name, served, deployment=deployment.name, route_metrics=route.perf_metrics)
