"""Running `firebox serve`: engines, platform, the HTTP app and uvicorn (the heavy half of the
composition root; cli.py turns flags into a ServerConfig and starts the engine processes first,
so that they load their models while this module's imports and the platform's set-up run)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from firebox.api.app import create_app
from firebox.api.state import Lifecycle
from firebox.cli_catalog import add_deployments, server_catalog
from firebox.config import ServerConfig
from firebox.engine.supervisor import SupervisedEngine
from firebox.serving.registry import ModelRegistry

logger = logging.getLogger("firebox")


def wait_for_engines(
    config: ServerConfig, launches: list[Any], console: Console, engines: list[tuple[str, Any]]
) -> None:
    """Wait for each launched engine in turn, appending it to `engines` once it is ready (so a
    failure later still shuts the earlier ones down), with a progress bar per model while its
    weights load. A failure cancels the launches still loading. Each engine is supervised: one
    that fails later is started again (`engine/supervisor.py`)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    pending = list(zip(config.engines, launches, strict=True))
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            while pending:
                engine_config, launch = pending[0]
                task = progress.add_task(f"loading {engine_config.model.name}", total=None)

                def report(done: int, total: int, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total)

                engine = SupervisedEngine(launch.wait(report), launch.restart)
                engines.append((engine_config.model.name, engine))
                pending.pop(0)
                progress.update(task, completed=1, total=1)
    finally:
        for _, launch in pending[1:]:
            launch.cancel()


async def shutdown_engines(engines: list[tuple[str, Any]]) -> None:
    for name, engine in engines:
        shutdown = getattr(engine, "shutdown", None)
        if shutdown is None:
            continue
        try:
            if inspect.iscoroutinefunction(shutdown):
                await shutdown()
            else:
                await asyncio.to_thread(shutdown)
        except Exception:
            logger.exception("engine %s did not shut down cleanly", name)


def log_startup(console: Console, config: ServerConfig, engines: list[tuple[str, Any]], is_open: bool) -> None:
    url = f"http://{config.host}:{config.port}"
    console.print(f"[bold green]firebox[/] serving on [bold]{url}[/]")
    console.print(f"  openai SDK:    base_url={url}/inference/v1")
    console.print(f"  fireworks SDK: base_url={url}")
    for name, engine in engines:
        console.print(f"  model [bold]{name}[/] (context {engine.model_info.max_model_len} tokens)")
    console.print(f"  dashboard:     {url}/dashboard   metrics: {url}/metrics")
    if is_open:
        console.print("  auth: [bold red]OFF[/] - no API key configured, every client is accepted")
    else:
        console.print("  auth: on (send 'Authorization: Bearer <key>'; manage keys with `firebox keys`)")


def build_app(config: ServerConfig, engines: list[tuple[str, Any]], platform: Any, lifecycle: Lifecycle) -> Any:
    """The HTTP app over the started engines, with the platform's auth, usage, limits and routes."""
    from firebox.api.routes.control_plane import control_plane_router
    from firebox.api.routes.dashboard import dashboard_router
    from firebox.api.routes.metrics import metrics_router
    from firebox.api.routes.usage import usage_router

    catalog = server_catalog(config)
    registry = ModelRegistry()
    for name, engine in engines:
        entry = catalog.get(name)
        registry.add(name, engine, public=entry.is_public if entry else None)
        platform.metrics.add_engine(name, lambda engine=engine: engine.stats)
    deployments, deployment_routers = add_deployments(config, registry, platform)
    routers = [
        control_plane_router(platform.accounts, platform.keys, platform.authenticator),
        usage_router(platform.usage_query, platform.accounts, platform.authenticator),
        metrics_router(platform.metrics),
        dashboard_router(),
        *deployment_routers,
    ]
    app = create_app(
        registry,
        platform.authenticator,
        platform.observers(),
        config,
        extra_routers=routers,
        lifecycle=lifecycle,
        rate_limiter=platform.rate_limiter,
        response_store=platform.responses,
        ledger=platform.usage,
    )
    app.state.deployments = deployments  # run_server starts and stops it on the serving loop
    return app


async def serve_app(config: ServerConfig, launches: list[Any], shutdown_grace: float, log_level: str = "info") -> None:
    """Serve until a shutdown signal, over the engines `launches` are loading."""
    from firebox.platform.services import Platform

    console = Console(stderr=True)
    engines: list[tuple[str, Any]] = []
    deployments = None
    try:
        platform = Platform.open(config.data_dir, config.database_url, admin_keys=config.api_keys,
                                 usage_fsync_s=config.usage_fsync_s, responses_ttl_s=config.responses_ttl_s)
    except BaseException:
        for launch in launches:
            launch.cancel()
        raise
    try:
        wait_for_engines(config, launches, console, engines)
        lifecycle = Lifecycle()
        app = build_app(config, engines, platform, lifecycle)
        deployments = app.state.deployments
        await deployments.start()
        uv_config = uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=log_level,
            timeout_graceful_shutdown=max(shutdown_grace, 0.1),
        )
        log_startup(console, config, engines, platform.authenticator.is_open())
        await DrainingServer(uv_config, lifecycle).serve()
    finally:
        if deployments is not None:
            await deployments.close()
        await shutdown_engines(engines)
        platform.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but a shutdown signal first turns new requests into 503s.

    uvicorn then stops listening, lets running requests finish for `timeout_graceful_shutdown`
    seconds and cancels the rest (a cancelled stream aborts its engine requests)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, minus re-raising the signal afterwards: the engines still have to stop."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.lifecycle.is_draining:
            logger.info("shutting down: new requests get 503, running ones may finish")
        self.lifecycle.is_draining = True
        super().handle_exit(sig, frame)


