"""The model catalog and the deployments control plane, wired for `firebox serve` (cli.py).

`--config FILE` names a TOML catalog (firebox/catalog.py): its serverless models become the
shared pool's engines; deployment-only models and every deployment run on replicas that
`LocalProcessBackend` starts as engine processes, or, with `--ray-address`, that Ray Serve runs
on a Ray cluster (`RayServeBackend`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from firebox.catalog import Catalog, catalog_from_engines, load_catalog
from firebox.config import EngineConfig, EngineOptions, ServerConfig

if TYPE_CHECKING:  # the command line reads catalogs before FastAPI is imported
    from fastapi import APIRouter

    from firebox.serving.registry import ModelRegistry


def catalog_engines(path: Path, base: EngineOptions) -> tuple[EngineConfig, ...]:
    """The engines of the catalog's serverless models, with the command line's engine settings."""
    return tuple(m.engine_config(base) for m in load_catalog(path).models if m.serverless)


def server_catalog(config: ServerConfig) -> Catalog:
    return load_catalog(config.catalog_path) if config.catalog_path else catalog_from_engines(config.engines)


def add_deployments(config: ServerConfig, registry: ModelRegistry, platform: Any,
                    backend: Any = None) -> tuple[Any, list[APIRouter]]:
    """The `DeploymentControl` (start it on the server's loop, close it at shutdown), with its
    resolver registered and its routers (deployments, catalog models) to mount. `backend`
    defaults to local engine processes, or Ray Serve with `config.ray_address`."""
    from firebox.api.routes.deployments import deployments_router
    from firebox.api.routes.model_catalog import model_catalog_router
    from firebox.platform.deployments import DeploymentStore
    from firebox.serving.deployments.catalog_models import CatalogModels
    from firebox.serving.deployments.control import DeploymentControl
    from firebox.serving.deployments.names import DeploymentResolver
    from firebox.serving.deployments.stats import deployment_stats

    settings = config.deployments
    backend = backend or _default_backend(config)
    models = CatalogModels(server_catalog(config), config.engine_defaults, registry)
    control = DeploymentControl(DeploymentStore(platform.database), models, backend, settings)
    registry.add_resolver(DeploymentResolver(control.manager))
    platform.metrics.add_engines(lambda: deployment_stats(control.manager))
    routers = [deployments_router(control, platform.authenticator),
               model_catalog_router(control, platform.authenticator)]
    return control, routers


def _default_backend(config: ServerConfig) -> Any:
    """Ray Serve on the cluster of `--ray-address`, else local engine processes."""
    settings = config.deployments
    if config.ray_address:
        try:
            from firebox.serving.deployments.ray_backend import RayServeBackend
        except ImportError as exc:
            raise RuntimeError(f"--ray-address needs Ray Serve: pip install 'firebox[ray]' ({exc})") from exc
        return RayServeBackend(config.ray_address)
    from firebox.serving.deployments.local_backend import LocalProcessBackend

    return LocalProcessBackend(start_timeout_s=settings.replica_start_timeout_s,
                               stop_timeout_s=settings.replica_stop_timeout_s,
                               max_concurrent_starts=settings.max_concurrent_starts)
