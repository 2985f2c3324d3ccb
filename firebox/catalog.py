"""The model catalog: which models firebox serves, read from a TOML file (`firebox serve --config`).

    [[models]]
    id = "smollm2-135m-instruct"      # served as accounts/<account>/models/<id>
    account = "fireworks"             # default: fireworks (public unless `public = false`)
    source = "default"                # default | a .gguf file | a Hugging Face folder | dummy:<config>
                                      # | hf:<org>/<repo>[@<revision>][:<GGUF file or quant>]
    dtype = "auto"                    # auto | float32 | bfloat16 | float16
    quantization = "auto"             # auto | fast | none | int8 | int4
    max_model_len = 2048              # context length; default: the model's own
    speculative = "ngram"             # off | ngram; default: firebox serve --speculative
    serverless = true                 # served from the shared pool; false: deployments only
    public = true                     # default: true in the default account, false elsewhere
    display_name = "SmolLM2 135M"
    description = "..."
    default_sampling = { temperature = 0.7, top_p = 0.9 }
    tool_call_format = "hermes"       # hermes | mistral | llama3_json | json_list; default: from the chat template

    [[models.deployments]]            # created at start unless a deployment of that name exists
    id = "smol-dedicated"
    account = "fireworks"             # default: the model's account
    min_replica_count = 1
    max_replica_count = 2
    autoscaling_policy = { scale_up_window = "30s", scale_down_window = "10m", scale_to_zero_window = "1h",
                           load_targets = { concurrent_requests = 8 } }

Unknown keys are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firebox.config import (
    DEFAULT_ACCOUNT,
    DEFAULT_MODEL_SOURCE,
    DType,
    EngineConfig,
    SpeculativeMethod,
    EngineOptions,
    Quantization,
    engine_config,
)
from firebox.loader.hub_ref import HubRef, is_hub_source

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p")
_POLICY_KEYS = {"scale_up_window": "scaleUpWindow", "scale_down_window": "scaleDownWindow",
                "scale_to_zero_window": "scaleToZeroWindow", "load_targets": "loadTargets"}  # fmt: skip


@dataclass(frozen=True)
class CatalogDeployment:
    deployment_id: str
    """The deployment's id; its name is accounts/<account>/deployments/<id>."""

    account: str
    """The account that owns it."""

    display_name: str = ""
    """Human-readable name."""

    min_replica_count: int = 0
    """Fewest replicas; 0 allows scaling to zero."""

    max_replica_count: int = 1
    """Most replicas."""

    autoscaling_policy: Mapping[str, Any] = field(default_factory=dict)
    """The control plane's `autoscalingPolicy` object (camelCase keys, duration strings)."""


@dataclass(frozen=True)
class CatalogModel:
    model_id: str
    """The id in accounts/<account>/models/<id>."""

    account: str = DEFAULT_ACCOUNT
    """The account that owns the model."""

    source: str = DEFAULT_MODEL_SOURCE
    """Where the weights come from (`ModelConfig.source`)."""

    dtype: DType = "auto"
    """Compute dtype (`ModelConfig.dtype`)."""

    quantization: Quantization = "auto"
    """Weight kernel (`ModelConfig.quantization`)."""

    max_model_len: int | None = None
    """Context length; `None` takes the model's own."""

    speculative: SpeculativeMethod | None = None
    """Draft tokens for every request (`off` | `ngram`); `None` takes `firebox serve --speculative`."""

    default_sampling: tuple[tuple[str, float], ...] = ()
    """Sampling defaults over the model's generation_config.json."""

    tool_call_format: str | None = None
    """How the model writes tool calls (`ModelConfig.tool_call_format`); `None`: from its chat template."""

    serverless: bool = True
    """Served from the shared pool (else only through deployments)."""

    public: bool | None = None
    """Usable by every account; `None`: public in the default account only."""

    display_name: str = ""
    """Human-readable name."""

    description: str = ""
    """Free text."""

    deployments: tuple[CatalogDeployment, ...] = ()
    """Deployments to create at start when they do not exist yet."""

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/models/{self.model_id}"

    @property
    def is_public(self) -> bool:
        return self.public if self.public is not None else self.account == DEFAULT_ACCOUNT

    def engine_config(self, base: EngineOptions) -> EngineConfig:
        """`base` (the command line's cache, scheduler and device settings) serving this model."""
        return engine_config(dataclasses.replace(
            base, source=self.source, name=self.name, dtype=self.dtype, quantization=self.quantization,
            max_model_len=self.max_model_len, generation_overrides=self.default_sampling,
            tool_call_format=self.tool_call_format,
            speculative=self.speculative or base.speculative,
        ))  # fmt: skip


@dataclass(frozen=True)
class Catalog:
    models: tuple[CatalogModel, ...]
    """Every model, serverless or deployment-only."""

    def get(self, name: str) -> CatalogModel | None:
        return next((m for m in self.models if m.name == name), None)


def catalog_from_engines(engines: Sequence[EngineConfig]) -> Catalog:
    """The catalog of a server started with `--model` flags: every model serverless."""
    models = []
    for engine in engines:
        account, _, model_id = engine.model.name.removeprefix("accounts/").partition("/models/")
        models.append(CatalogModel(model_id=model_id, account=account, source=engine.model.source,
                                   dtype=engine.model.dtype, quantization=engine.model.quantization,
                                   max_model_len=engine.model.max_model_len,
                                   default_sampling=engine.model.generation_overrides,
                                   tool_call_format=engine.model.tool_call_format))
    return Catalog(tuple(models))


def load_catalog(path: Path) -> Catalog:
    """Parse a catalog file; ValueError (with the model at fault) for anything invalid."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return parse_catalog(data)


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    _check_keys("catalog", data, {"models"})
    models = tuple(_model(entry) for entry in data.get("models", []))
    names = [m.name for m in models]
    if not models:
        raise ValueError("the catalog lists no models: add a [[models]] table")
    if len(set(names)) != len(names):
        raise ValueError(f"the catalog lists a model twice: {names}")
    return Catalog(models)


_MODEL_KEYS = {"id", "account", "source", "dtype", "quantization", "max_model_len", "speculative", "default_sampling",
               "serverless", "public", "display_name", "description", "deployments", "tool_call_format"}  # fmt: skip
_DEPLOYMENT_KEYS = {"id", "account", "display_name", "min_replica_count", "max_replica_count", "autoscaling_policy"}


def _model(entry: Mapping[str, Any]) -> CatalogModel:
    where = f"model {entry.get('id', '?')!r}"
    _check_keys(where, entry, _MODEL_KEYS)
    if "id" not in entry:
        raise ValueError("every [[models]] entry needs an id")
    sampling = dict(entry.get("default_sampling", {}))
    _check_keys(f"{where} default_sampling", sampling, set(SAMPLING_KEYS))
    fields = {k: v for k, v in entry.items() if k not in ("id", "default_sampling", "deployments")}
    model = CatalogModel(model_id=entry["id"], default_sampling=tuple((k, float(v)) for k, v in sampling.items()),
                         **fields)
    model.engine_config(EngineOptions())  # validates dtype, quantization, max_model_len
    if is_hub_source(model.source):
        try:
            HubRef.parse(model.source)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if model.tool_call_format is not None:
        from firebox.serving.tools.formats import tool_format  # here: the catalog is read before engines start

        try:
            tool_format(model.tool_call_format)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    deployments = tuple(_deployment(model, d) for d in entry.get("deployments", []))
    return dataclasses.replace(model, deployments=deployments)


def _deployment(model: CatalogModel, entry: Mapping[str, Any]) -> CatalogDeployment:
    where = f"deployment {entry.get('id', '?')!r} of model {model.model_id!r}"
    _check_keys(where, entry, _DEPLOYMENT_KEYS)
    if "id" not in entry:
        raise ValueError(f"every deployment of model {model.model_id!r} needs an id")
    policy = dict(entry.get("autoscaling_policy", {}))
    _check_keys(f"{where} autoscaling_policy", policy, set(_POLICY_KEYS))
    return CatalogDeployment(
        deployment_id=entry["id"],
        account=entry.get("account", model.account),
        display_name=entry.get("display_name", ""),
        min_replica_count=int(entry.get("min_replica_count", 0)),
        max_replica_count=int(entry.get("max_replica_count", max(1, int(entry.get("min_replica_count", 0))))),
        autoscaling_policy={_POLICY_KEYS[k]: v for k, v in policy.items()},
    )


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {unknown}; allowed: {sorted(allowed)}")
