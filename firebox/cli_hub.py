"""Models by their Hugging Face name on the command line: `firebox pull` (into the cache ahead of
time: pull on one machine, copy the cache to an air-gapped one), `firebox models` (what the cache
holds), and the pulling `firebox serve` does before its engines start (cli.py).

huggingface_hub is imported only when a command needs it: `serve` of local files never pays for it.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, NoReturn

import typer

from firebox.catalog import load_catalog
from firebox.config import EngineConfig, ModelConfig, ServerConfig
from firebox.loader.hub_ref import HubError, is_hub_source, with_revision

REVISION_HELP = "Branch, tag or commit of the hf: models (default: the repository's main branch)."


def pull(
    source: Annotated[str, typer.Argument(help="hf:<org>/<repo>[@<revision>][:<file or quant>]; the hf: is optional.")],
    revision: Annotated[str | None, typer.Option(help=REVISION_HELP)] = None,
) -> None:
    """Download a model from the Hugging Face Hub into its cache (HF_HOME), ahead of `firebox serve`:
    a GGUF file, or a safetensors model's weights, config and tokenizer."""
    from firebox.loader.hub import human_size
    from firebox.loader.hub import pull as pull_source

    try:
        spec = with_revision(source if is_hub_source(source) else f"hf:{source}", revision)
        pulled = pull_source(spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except HubError as exc:
        _fail(exc)
    typer.echo(f"{pulled.source}\t{human_size(pulled.size)}\t{pulled.path}")


def models() -> None:
    """List the models in the Hugging Face cache, with their sizes (serve one with --model SOURCE)."""
    from firebox.loader.hub import cache_dir, cached_models, human_size

    rows = cached_models()
    if not rows:
        typer.echo(f"no models in {cache_dir()}; download one with: firebox pull hf:<org>/<repo>", err=True)
        return
    typer.echo("SOURCE\tSIZE\tPATH")
    for row in rows:
        typer.echo(f"{row.source}\t{human_size(row.size)}\t{row.path}")


def apply_revision(models: list[str], revision: str | None) -> list[str]:
    """`--revision` onto each hf: `--model` (a `=NAME` kept); ValueError when none is one."""
    if revision is None:
        return models
    if not any(is_hub_source(spec) for spec in models):
        raise ValueError("--revision applies to hf: models (--model hf:<org>/<repo>)")
    specs = []
    for spec in models:
        source, eq, name = spec.partition("=")
        specs.append(with_revision(source, revision) + eq + name if is_hub_source(source) else spec)
    return specs


def pull_hub_sources(config: ServerConfig) -> ServerConfig:
    """Download the hf: models now, once, with a progress bar per file, each engine's source pinned
    to the commit it got: its engine process and the API process then open it from the cache with
    no network. The catalog's deployment-only models come down too (their replicas start later)."""
    try:
        engines = tuple(_pinned_engine(engine) for engine in config.engines)
        if config.catalog_path is not None:
            _pull_deployment_models(config)
    except (HubError, ValueError) as exc:  # ValueError: a malformed hf: source named with =NAME
        _fail(exc)
    return dataclasses.replace(config, engines=engines)


def _pinned_engine(engine: EngineConfig) -> EngineConfig:
    draft = engine.draft_model and _pinned(engine.draft_model)
    return dataclasses.replace(engine, model=_pinned(engine.model), draft_model=draft)


def _pinned(model: ModelConfig) -> ModelConfig:
    if not is_hub_source(model.source):
        return model
    from firebox.loader.hub import pull as pull_source

    return dataclasses.replace(model, source=pull_source(model.source).source)


def _pull_deployment_models(config: ServerConfig) -> None:
    from firebox.loader.hub import pull as pull_source

    assert config.catalog_path is not None
    for model in load_catalog(config.catalog_path).models:
        if not model.serverless and is_hub_source(model.source):
            pull_source(model.source)


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)
