"""`RayServeBackend`: deployments whose replicas run on a Ray cluster, through Ray Serve.

`firebox serve --ray-address ADDRESS|auto` picks it. This server joins the cluster as a Ray driver
and runs no replica itself; each firebox deployment becomes one Ray Serve application holding one
Serve deployment of `ray_replica.FireboxReplica`, with the options of `ray_options`. Ray's
controller places and replaces the replicas, Ray's autoscaler sizes them, and the request router
in this process's handle (`ray_router`) picks one per request.

So this backend runs whole deployments (`run_deployment`, the `DeploymentBackend` of replicas.py)
where `LocalProcessBackend` starts replicas one at a time for `LiveDeployment` to scale and route.
One task polls Ray Serve's view of the applications for every `RayDeployment`. Ray calls block,
so they run off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from firebox.config import DeploymentConfig
from firebox.engine.build import CoreBuilder
from firebox.serving.deployments.ray_deployment import AppView, OnChange, RayDeployment, RayReplica
from firebox.serving.deployments.ray_options import SERVE_DEPLOYMENT, deployment_options
from firebox.serving.deployments.ray_replica import FireboxReplica
from firebox.serving.deployments.spec import DeploymentSpec

logger = logging.getLogger(__name__)

NAMESPACE = "firebox"  # the Ray namespace of this server's driver (Serve keeps its own, "serve")


class RayServeBackend:
    """Deployments on the Ray cluster at `address` ("auto": the one this machine belongs to).
    `build` is what replicas run to build their engine core (default `build.build_core`; tests
    pass a fake); it must be importable on the cluster's nodes, as firebox must."""

    def __init__(self, address: str, *, build: CoreBuilder | None = None, poll_s: float = 0.5) -> None:
        self.address = address
        self._build = build
        self._poll_s = poll_s
        self._deployments: dict[str, RayDeployment] = {}  # by Ray application name
        self._connect_lock = threading.Lock()
        self._connected = False
        self._watcher: asyncio.Task | None = None

    def run_deployment(self, spec: DeploymentSpec, settings: DeploymentConfig, on_change: OnChange) -> RayDeployment:
        deployment = RayDeployment(spec, self, settings, on_change)
        self._deployments[deployment.app_name] = deployment
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="ray serve watcher")
        return deployment

    def list(self) -> list[RayReplica]:
        """Every replica of this server's deployments, as Ray last reported them."""
        return [r for d in self._deployments.values() for r in d.replicas]

    async def deploy(self, deployment: RayDeployment, desired: int) -> Any:
        """Create or update the deployment's application; its `DeploymentHandle`. Returns once Ray
        has taken it, not once its replicas run."""
        spec, settings, build = deployment.spec, deployment.settings, self._build
        options = deployment_options(spec, desired, settings)

        def run() -> Any:
            from ray import serve

            self._connect()
            app = serve.deployment(FireboxReplica).options(**options).bind(spec.config, build)
            target = serve.RunTarget(app, name=deployment.app_name, route_prefix=None)
            return serve.run_many([target], wait_for_applications_running=False)[0]

        return await asyncio.to_thread(run)

    async def delete(self, deployment: RayDeployment) -> None:
        """Delete its application (Ray stops the replicas) and wait until it is gone."""
        await asyncio.to_thread(self._delete_app, deployment.app_name)

    async def remove(self, deployment: RayDeployment) -> None:
        """The deployment is deleted: its application too, and it is no longer polled."""
        self._deployments.pop(deployment.app_name, None)
        await self.delete(deployment)

    def _delete_app(self, name: str) -> None:
        from ray import serve

        self._connect()
        serve.delete(name)

    def _connect(self) -> None:
        """Join the cluster as a driver and start Serve there (no HTTP proxy: requests come
        through this server's handles). Once; a process already connected (tests) stays as it is."""
        with self._connect_lock:
            if self._connected:
                return
            import ray
            from ray import serve

            if not ray.is_initialized():
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False)
            serve.start(proxy_location="Disabled")
            self._connected = True

    async def _watch(self) -> None:
        while self._deployments:
            fetched_at = time.monotonic()
            try:
                apps = await asyncio.to_thread(self._read_apps, fetched_at) if self._connected else None
            except Exception as exc:  # the controller is restarting, the cluster is unreachable
                logger.warning("could not read Ray Serve's applications: %s", exc)
                apps = None
            for name, deployment in list(self._deployments.items()):
                if apps is not None:
                    deployment.observe(apps.get(name))
            await asyncio.sleep(self._poll_s)

    def _read_apps(self, fetched_at: float) -> dict[str, AppView]:
        from ray.serve.context import _get_global_client  # the controller's details: per-replica ids and states

        details = _get_global_client().get_serve_details()
        return {name: _app_view(app, fetched_at) for name, app in details.get("applications", {}).items()}


def _app_view(app: dict[str, Any], fetched_at: float) -> AppView:
    deployment = app.get("deployments", {}).get(SERVE_DEPLOYMENT, {})
    replicas = tuple(RayReplica(r["replica_id"], f"{r.get('node_ip')}:{r.get('pid')}", r["state"],
                                r.get("actor_name", ""))
                     for r in deployment.get("replicas", []))  # fmt: skip
    message = app.get("message") or deployment.get("message") or ""
    return AppView(app.get("status", ""), message, deployment.get("target_num_replicas"), replicas, fetched_at)
