"""`firebox` command line (the composition root): flags -> configs -> engines + app -> uvicorn.

`firebox serve` with no arguments serves the bundled default model on 127.0.0.1:8000.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from firebox.bench.cli import bench_app
from firebox.cli_catalog import catalog_engines
from firebox.cli_hub import REVISION_HELP, apply_revision, pull_hub_sources
from firebox.cli_hub import models as models_command
from firebox.cli_hub import pull as pull_command
from firebox.cli_keys import keys_app
from firebox.config import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SOURCE,
    DeploymentConfig,
    EngineConfig,
    EngineOptions,
    ServerConfig,
    default_max_replicas,
    engine_config,
)
from firebox.loader.hub_ref import HubRef, is_hub_source
from firebox.names import split_model_name

app = typer.Typer(help="firebox: a self-hostable, Fireworks-compatible inference server.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(bench_app, name="bench")
app.command("pull")(pull_command)
app.command("models")(models_command)
logger = logging.getLogger("firebox")

_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


@app.callback()
def _main() -> None:
    """firebox: a self-hostable, Fireworks-compatible inference server."""


# --- flags -> configs ---------------------------------------------------------------------------


def default_model_name(source: str) -> str:
    """`default` -> the bundled model's name; otherwise accounts/fireworks/models/<lowercased stem>."""
    if source == DEFAULT_MODEL_SOURCE:
        return DEFAULT_MODEL_NAME
    if is_hub_source(source):  # hf:<org>/<repo>[:<file or quant>] -> the repository's (or file's) name
        stem = HubRef.parse(source).stem
    else:
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


_DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> float | None:
    """`30d`, `12h`, `90m`, `3600s` or `3600` -> seconds; `0` -> None (no limit)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: a number with s, m, h or d, like 30d")
    seconds = float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
    return seconds or None


def build_server_config(models: list[str], engine: EngineOptions, server: ServerConfig) -> ServerConfig:
    """`server` (host, port, keys, data dir, catalog) with one engine per `--model`, or per
    serverless model of its catalog; `engine` holds the engine flags."""
    if server.catalog_path is not None:
        engines = catalog_engines(server.catalog_path, engine)
    else:
        specs = [parse_model_spec(spec) for spec in models]
        engines = tuple(engine_config(dataclasses.replace(engine, source=s, name=n)) for s, n in specs)
    names = [e.model.name for e in engines]
    if len(set(names)) != len(names):
        raise typer.BadParameter(
            f"two models with the same name: {names}; name them with SOURCE=NAME", param_hint="--model"
        )
    return dataclasses.replace(server, engines=engines, engine_defaults=engine)


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
            "| dummy:<config.json or folder> | hf:<org>/<repo>[:<GGUF file or quant, e.g. Q4_K_M>] (downloaded into "
            "the Hugging Face cache). NAME: accounts/<acct>/models/<id> or a short <id>.",
        ),
    ] = None,
    revision: Annotated[str | None, typer.Option(help=REVISION_HELP)] = None,
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
        str,
        typer.Option(
            help="auto | fast | none | int4 | int8: linear-layer kernels (none: dense, the reference numerics; "
            "fast: auto with int8 activations into 4-bit layers, as llama.cpp: about 2x prefill and batched "
            "decode, less exact)."
        ),
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    num_threads: Annotated[int | None, typer.Option(help="CPU threads for torch; default: all cores.")] = None,
    max_num_seqs: Annotated[int, typer.Option(help="Most requests running at once.")] = 64,
    max_num_batched_tokens: Annotated[int, typer.Option(help="Token budget of one engine step.")] = 512,
    max_waiting: Annotated[int, typer.Option(help="Most requests waiting; beyond it: HTTP 429.")] = 1024,
    speculative: Annotated[
        str, typer.Option(help="off | ngram | draft: draft tokens (by prompt lookup or --draft-model), verified "
                          "several per step.")
    ] = "off",
    draft_model: Annotated[
        str | None, typer.Option(help="A smaller model with the same vocabulary that drafts tokens (a source, as "
                                 "--model); implies --speculative draft.")
    ] = None,
    num_kv_blocks: Annotated[
        int | None, typer.Option(help="KV-cache blocks; default: sized from --kv-cache-mib.")
    ] = None,
    kv_cache_mib: Annotated[int, typer.Option(help="KV-cache memory budget in MiB.")] = 512,
    block_size: Annotated[int, typer.Option(help="Tokens per KV-cache block.")] = 16,
    prefix_caching: Annotated[bool, typer.Option(help="Share KV blocks of common prefixes.")] = True,
    kv_cache_dtype: Annotated[
        str, typer.Option(help="auto | float32 | float16 | bfloat16 (auto: fp16 under the quantized CPU kernels).")
    ] = "auto",
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
    max_request_bytes: Annotated[
        int, typer.Option(help="Largest request body in bytes; a larger one is answered 413 unread.")
    ] = ServerConfig.max_request_bytes,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-hosts",
            help="Host names the server answers besides localhost and --host (repeatable or comma-separated; "
            "'*': any). Others get 400, against DNS rebinding.",
        ),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Run deployment replicas on this Ray cluster through Ray Serve ('auto': the "
                                 "one this machine joined); needs firebox[ray]. Default: local processes.")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="Deployment replicas this server runs at most, all deployments together; "
                                 "default: one per core and per 2 GiB of memory, whichever is fewer.")
    ] = None,
    usage_fsync_ms: Annotated[
        int, typer.Option(help="Group commit of the usage journal: fsync at most every N ms (a power cut loses at "
                          "most that much usage); 0: before each request's record returns; -1: never.")
    ] = 50,
    responses_ttl: Annotated[
        str, typer.Option(help="How long stored responses (Responses API) are kept: a number with s, m, h or d "
                          "(a conversation's earlier turns stay while a later one is kept); 0: forever.")
    ] = "30d",
    max_inflight_per_key: Annotated[
        int, typer.Option(help="Choices (prompts x n) one API key may have running or waiting; more is a 429. "
                          "0: unlimited.")
    ] = ServerConfig.max_inflight_per_key,
    max_inflight_per_account: Annotated[
        int, typer.Option(help="Choices all keys of one account may have running or waiting together; more is a "
                          "429. 0: unlimited.")
    ] = ServerConfig.max_inflight_per_account,
) -> None:
    """Serve models over the Fireworks/OpenAI-compatible HTTP API."""
    if catalog_file is not None and model:
        raise typer.BadParameter("give models either with --model or in the --config catalog, not both")
    try:  # the configs check the values (ValueError)
        engine = EngineOptions(
            dtype=dtype, quantization=quantization, max_model_len=max_model_len, block_size=block_size,
            num_kv_blocks=num_kv_blocks, kv_cache_mib=kv_cache_mib, prefix_caching=prefix_caching,
            kv_cache_dtype=kv_cache_dtype, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            max_waiting=max_waiting, speculative=speculative, draft_model=draft_model, device=device,
            num_threads=num_threads,
        )  # fmt: skip
        server = ServerConfig(
            host=host, port=port, api_keys=tuple(k for k in api_key or [] if k), catalog_path=catalog_file,
            engine_process=engine_process, max_request_bytes=max_request_bytes,
            allowed_hosts=tuple(h for spec in allowed_hosts or [] for h in spec.split(",") if h.strip()),
            ray_address=ray_address or None, usage_fsync_s=None if usage_fsync_ms < 0 else usage_fsync_ms / 1000,
            deployments=DeploymentConfig(max_replicas=default_max_replicas() if max_replicas is None else max_replicas),
            responses_ttl_s=parse_duration_s(responses_ttl),
            max_inflight_per_key=max_inflight_per_key, max_inflight_per_account=max_inflight_per_account,
            **({"data_dir": data_dir} if data_dir is not None else {}),
        )  # fmt: skip
        config = build_server_config(apply_revision(model or [DEFAULT_MODEL_SOURCE], revision), engine, server)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run_server(pull_hub_sources(config), shutdown_grace, log_level)


# --- running ------------------------------------------------------------------------------------


def _fast_event_loop() -> Any:
    """uvloop's event loop where it is installed (Linux, macOS): every streamed token crosses the
    loop a few times, and uvloop's scheduling costs a fraction of asyncio's pure-Python one."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def launch_engines(config: ServerConfig) -> list[Any]:
    """Start every engine process now, before the server's own imports and set-up: the models load
    meanwhile. Each launch's `wait(progress)` gives its engine (thread engines load there).

    On Linux the children are forked: this process has no threads yet and has imported little,
    and a fork skips a fresh interpreter's start and imports (a fifth of a second). Replicas
    started later, from the running server, are spawned."""
    if not config.engine_process:
        return [_ThreadEngineLaunch(engine) for engine in config.engines]
    from firebox.engine.process import launch_process_engine

    start_method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    return [launch_process_engine(engine, start_method) for engine in config.engines]


class _ThreadEngineLaunch:
    """An engine on a thread of the server: nothing to start early."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    def wait(self, progress: Any = None) -> Any:
        from firebox.engine.launch import start_engine  # torch and the loaders: only when serving

        return start_engine(self.config, progress)

    def restart(self) -> Any:
        """A new engine of the same model, for the supervisor once this one failed."""
        from firebox.engine.launch import start_engine

        return start_engine(self.config)

    def cancel(self) -> None:
        pass


def run_server(config: ServerConfig, shutdown_grace: float, log_level: str = "info") -> None:
    """Start the engines, then serve on the fast event loop until a shutdown signal."""
    launches = launch_engines(config)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # FastAPI, SQLAlchemy, uvicorn: imported while the models load
        from firebox.server import serve_app
    except BaseException:
        for launch in launches:
            launch.cancel()
        raise
    from firebox.platform.data_dir_lock import DataDirInUseError

    try:
        with asyncio.Runner(loop_factory=_fast_event_loop()) as runner:
            runner.run(serve_app(config, launches, shutdown_grace, log_level))
    except DataDirInUseError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()
