"""`DeploymentManager`: the live deployments of this server, by name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from firebox.config import DeploymentConfig
from firebox.serving.deployments.budget import ReplicaBudget
from firebox.serving.deployments.live import LiveDeployment, OnChange
from firebox.serving.deployments.replicas import DeploymentBackend, ReplicaBackend
from firebox.serving.deployments.spec import DeploymentSpec


def _ignore(_: LiveDeployment) -> None:
    pass


class DeploymentManager:
    """Runs every deployment's replicas through one backend. Call on the event loop."""

    def __init__(self, backend: ReplicaBackend | DeploymentBackend, settings: DeploymentConfig | None = None,
                 on_change: OnChange = _ignore) -> None:
        self.backend = backend
        self.settings = settings or DeploymentConfig()
        self.budget = ReplicaBudget(self.settings.max_replicas)  # local replicas; Ray Serve places its own
        self._on_change = on_change
        self._live: dict[str, LiveDeployment] = {}

    def __iter__(self) -> Iterator[LiveDeployment]:
        return iter(list(self._live.values()))

    def get(self, name: str) -> LiveDeployment | None:
        return self._live.get(name)

    def deploy(self, spec: DeploymentSpec) -> LiveDeployment:
        """Run `spec`: a new deployment starts its loop; a running one takes the new spec."""
        live = self._live.get(spec.name)
        if live is not None:
            live.update(spec)
            return live
        if isinstance(self.backend, DeploymentBackend):  # the platform scales and routes (Ray Serve)
            live = self.backend.run_deployment(spec, self.settings, self._on_change)
        else:
            live = LiveDeployment(spec, self.backend, self.settings, self._on_change, self.budget)
        self._live[spec.name] = live
        live.start()
        return live

    async def remove(self, name: str) -> None:
        """Stop the deployment's replicas; requests waiting for one get a 503."""
        live = self._live.pop(name, None)
        if live is not None:
            await live.close()

    async def close(self) -> None:
        await asyncio.gather(*(self.remove(name) for name in list(self._live)))

    def find(self, deployment_id: str, model: str, account_id: str | None = None) -> LiveDeployment | None:
        """A deployment given by its short id: the caller's (`account_id`), else the one of
        `model`'s account, else the only one."""
        matches = [d for d in self._live.values() if d.spec.deployment_id == deployment_id
                   and d.spec.base_model == model]  # fmt: skip
        for is_own in (lambda d: d.spec.account_id == account_id,
                       lambda d: model.startswith(f"accounts/{d.spec.account_id}/")):  # fmt: skip
            own = [d for d in matches if is_own(d)]
            if len(own) == 1:
                return own[0]
        return matches[0] if len(matches) == 1 else None

    def default_for(self, model: str, account_id: str | None = None) -> LiveDeployment | None:
        """Where a request naming only `model` goes when no shared pool serves it: the oldest
        deployment of the caller's account (`account_id`), else the oldest of any."""
        deployments = [d for d in self._live.values() if d.spec.base_model == model]
        return next((d for d in deployments if d.spec.account_id == account_id), None) or next(iter(deployments), None)
