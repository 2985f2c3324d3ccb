"""`firebox` command line (the composition root): flags -> configs -> engines + app -> uvicorn.

`firebox serve` with no arguments serves the bundled default model on 127.0.0.1:8000.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from firebox.api.app import create_app
from firebox.api.state import Lifecycle
from firebox.bench.cli import bench_app
from firebox.config import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SOURCE,
    CacheConfig,
    DeviceConfig,
    EngineConfig,
    ModelConfig,
    SchedulerConfig,
    ServerConfig,
)
from firebox.cli_catalog import add_deployments, catalog_engines, server_catalog
from firebox.cli_keys import keys_app
from firebox.serving.registry import ModelRegistry, split_model_name

app = typer.Typer(help="firebox: a self-hostable, Fireworks-compatible inference server.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")
logger = logging.getLogger("firebox")

MIB = 1024 * 1024
_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


@app.callback()
def _main() -> None:
    """firebox: a self-hostable, Fireworks-compatible inference server."""


# --- flags -> configs ---------------------------------------------------------------------------


def default_model_name(source: str) -> str:
    """`default` -> the bundled model's name; otherwise accounts/fireworks/models/<lowercased stem>."""
    if source == DEFAULT_MODEL_SOURCE:
        return DEFAULT_MODEL_NAME
    path = Path(source.removeprefix("dummy:").rstrip("/"))
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    if path.name == "config.json":  # dummy:<folder>/config.json -> the folder's name
        stem = path.parent.name
    return model_full_name(_NAME_CHARS.sub("-", stem.lower()).strip("-") or "model")


def model_full_name(name: str) -> str:
    full = name if "/" in name else f"accounts/fireworks/models/{name}"
    split_model_name(full)  # raises ValueError with the expected form
    return full


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`SOURCE` or `SOURCE=NAME` -> (source, full model name)."""
    source, _, name = spec.partition("=")
    if not source:
        raise typer.BadParameter(f"no model source in {spec!r}", param_hint="--model")
    try:
        return source, model_full_name(name) if name else default_model_name(source)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc


def engine_defaults(opts: dict[str, Any]) -> EngineConfig:
    """The engine flags (cache, scheduler, device) with the default model."""
    cache = CacheConfig(
        block_size=opts["block_size"],
        num_blocks=opts["num_kv_blocks"],
        memory_bytes=opts["kv_cache_mib"] * MIB,
        enable_prefix_caching=opts["prefix_caching"],
    )
    scheduler = SchedulerConfig(
        max_num_seqs=opts["max_num_seqs"],
        max_num_batched_tokens=opts["max_num_batched_tokens"],
        max_waiting=opts["max_waiting"],
    )
    device = DeviceConfig(device=opts["device"], num_threads=opts["num_threads"])
    return EngineConfig(cache=cache, scheduler=scheduler, device=device)


def build_server_config(models: list[str], opts: dict[str, Any]) -> ServerConfig:
    """ServerConfig with one EngineConfig per `--model` (or per serverless model of the catalog
    `--config`); `opts` holds the engine flags."""
    defaults = engine_defaults(opts)
    engines = []
    for spec in models if opts.get("catalog_file") is None else []:
        source, name = parse_model_spec(spec)
        model = ModelConfig(
            source=source,
            name=name,
            dtype=opts["dtype"],
            quantization=opts["quantization"],
            max_model_len=opts["max_model_len"],
        )
        engines.append(dataclasses.replace(defaults, model=model))
    if opts.get("catalog_file") is not None:
        engines.extend(catalog_engines(opts["catalog_file"], defaults))
    names = [e.model.name for e in engines]
    if len(set(names)) != len(names):
        raise typer.BadParameter(
            f"two models with the same name: {names}; name them with SOURCE=NAME", param_hint="--model"
        )
    extra: dict[str, Any] = {"data_dir": opts["data_dir"]} if opts["data_dir"] is not None else {}
    return ServerConfig(
        host=opts["host"], port=opts["port"], api_keys=tuple(opts["api_keys"]), engines=tuple(engines),
        engine_process=opts.get("engine_process", True), catalog_path=opts.get("catalog_file"),
        engine_defaults=defaults, **extra,
    )  # fmt: skip


# --- the serve command --------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="SOURCE or SOURCE=NAME, repeatable. SOURCE: default | a .gguf file | a Hugging Face folder "
            "| dummy:<config.json or folder>. NAME: accounts/<acct>/models/<id> or a short <id>.",
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", envvar="FIREBOX_API_KEY", help="Accepted API key, repeatable. None: open access."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ~/.firebox or FIREBOX_DATA_DIR).")
    ] = None,
    max_model_len: Annotated[int | None, typer.Option(help="Context length; default: the model's own.")] = None,
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16.")] = "auto",
    quantization: Annotated[
        str, typer.Option(help="auto | none | int4 | int8: linear-layer kernels (none: dense, the reference numerics).")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    num_threads: Annotated[int | None, typer.Option(help="CPU threads for torch; default: all cores.")] = None,
    max_num_seqs: Annotated[int, typer.Option(help="Most requests running at once.")] = 64,
    max_num_batched_tokens: Annotated[int, typer.Option(help="Token budget of one engine step.")] = 512,
    max_waiting: Annotated[int, typer.Option(help="Most requests waiting; beyond it: HTTP 429.")] = 1024,
    num_kv_blocks: Annotated[
        int | None, typer.Option(help="KV-cache blocks; default: sized from --kv-cache-mib.")
    ] = None,
    kv_cache_mib: Annotated[int, typer.Option(help="KV-cache memory budget in MiB.")] = 512,
    block_size: Annotated[int, typer.Option(help="Tokens per KV-cache block.")] = 16,
    prefix_caching: Annotated[bool, typer.Option(help="Share KV blocks of common prefixes.")] = True,
    shutdown_grace: Annotated[float, typer.Option(help="Seconds running requests get to finish at shutdown.")] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error.")] = "info",
    catalog_file: Annotated[
        Path | None, typer.Option(
            "--config", exists=True, dir_okay=False, help="TOML model catalog (models, deployments); replaces --model."
        )
    ] = None,
    engine_process: Annotated[
        bool, typer.Option(help="Run each engine in its own process (else on a thread of the server).")
    ] = True,
) -> None:
    """Serve models over the Fireworks/OpenAI-compatible HTTP API."""
    opts = dict(locals())
    opts["api_keys"] = [k for k in api_key or [] if k]
    if catalog_file is not None and model:
        raise typer.BadParameter("give models either with --model or in the --config catalog, not both")
    try:
        config = build_server_config(model or [DEFAULT_MODEL_SOURCE], opts)
    except ValueError as exc:  # a config's own validation
        raise typer.BadParameter(str(exc)) from exc
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=_fast_event_loop()) as runner:
        runner.run(run_server(config, shutdown_grace, log_level))


# --- running ------------------------------------------------------------------------------------


def _fast_event_loop() -> Any:
    """uvloop's event loop where it is installed (Linux, macOS): every streamed token crosses the
    loop a few times, and uvloop's scheduling costs a fraction of asyncio's pure-Python one."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def start_engines(config: ServerConfig, console: Console, engines: list[tuple[str, Any]]) -> None:
    """One engine per model, appended to `engines` as each starts (so a failure later still shuts
    the earlier ones down), with a progress bar per model while its weights load."""
    from firebox.engine.launch import start_engine  # torch and the loaders: only when serving

    if config.engine_process:
        from firebox.engine.process import start_process_engine as start_engine

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        for engine_config in config.engines:
            task = progress.add_task(f"loading {engine_config.model.name}", total=None)

            def report(done: int, total: int, task: Any = task) -> None:
                progress.update(task, completed=done, total=total)

            engines.append((engine_config.model.name, start_engine(engine_config, report)))
            progress.update(task, completed=1, total=1)


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
        platform.completion_callbacks(),
        config,
        extra_routers=routers,
        lifecycle=lifecycle,
        rate_limiter=platform.rate_limiter,
        response_store=platform.responses,
    )
    app.state.deployments = deployments  # run_server starts and stops it on the serving loop
    return app


async def run_server(config: ServerConfig, shutdown_grace: float, log_level: str = "info") -> None:
    from firebox.platform.services import Platform

    console = Console(stderr=True)
    engines: list[tuple[str, Any]] = []
    deployments = None
    platform = Platform.open(config.data_dir, config.database_url, admin_keys=config.api_keys)
    try:
        start_engines(config, console, engines)
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


def main() -> None:
    app()
