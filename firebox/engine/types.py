"""Records that cross the engine boundary.

No torch here, and every record is picklable: the engine core can move into its own process
behind the same `EngineClient` without changing what crosses the boundary.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from firebox.loader.tokenizer import Tokenizer


class EngineError(Exception):
    """Base of the errors the engine raises to its callers."""


class QueueFullError(EngineError):
    """The waiting queue is at `SchedulerConfig.max_waiting`; the caller should retry later."""


class PromptTooLongError(EngineError):
    """The prompt plus one generated token does not fit the model's context."""

    def __init__(self, num_prompt_tokens: int, max_model_len: int) -> None:
        super().__init__(
            f"prompt has {num_prompt_tokens} tokens; this model's context length is {max_model_len} tokens"
        )
        self.num_prompt_tokens = num_prompt_tokens
        self.max_model_len = max_model_len


class EngineDeadError(EngineError):
    """The engine loop stopped (crash or shutdown); in-flight requests end with this."""


class EngineUnavailableError(EngineDeadError):
    """The model's engine is down (restarting, or given up on); retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestFailedError(EngineError):
    """An exception inside an engine step, attributed to this request; the engine goes on."""


class SlowReaderError(EngineError):
    """The stream's reader fell too many deltas behind: the stream was cut and the request aborted,
    rather than buffered without bound."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling; the sampler applies all of it in one batched pass."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0.0 = greedy, exactly argmax
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # top-N alternatives per generated token; 0 = chosen token only
    prompt_logprobs: int | None = None  # same, for every prompt token (echo + logprobs)
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if not 0 < self.typical_p <= 1:
            raise ValueError("typical_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.min_tokens < 0:
            raise ValueError("min_tokens must be >= 0")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


class GrammarSyntax(enum.StrEnum):
    """The language a `StructuredOutputSpec` is written in."""

    JSON_SCHEMA = "json_schema"  # a JSON Schema document (JSON text)
    LARK = "lark"  # llguidance's Lark dialect; may embed JSON schemas with %json{...}
    GBNF = "gbnf"  # llama.cpp's GBNF (Fireworks' grammar mode)
    REGEX = "regex"


# How constrained JSON is written (llguidance's JsonCompileOptions, also put under "x-guidance" in
# schemas embedded in Lark grammars): ", " and ": " between items and no free whitespace. A small
# model given free whitespace may emit newlines until max_tokens instead of closing the document.
COMPACT_JSON_OPTIONS: dict[str, object] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True, slots=True)
class StructuredOutputSpec:
    """What a constrained request's output must match, enforced token by token in the engine.

    Hashable: equal specs compile once (`engine/structured_output.py` caches by the spec).
    """

    syntax: GrammarSyntax
    source: str  # the schema (JSON text) or grammar text, as the API resolved it


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams
    arrival_time: float  # time.monotonic() when the API received the request
    priority: int = 0  # lower runs first; FCFS among equals
    cache_salt: str | None = None  # prompt_cache_isolation_key: no prefix-cache sharing across salts
    affinity_key: str | None = None  # routing hint: requests with the same key prefer the same replica
    structured_output: StructuredOutputSpec | None = None  # constrained decoding; None = free text
    prediction_token_ids: tuple[int, ...] = ()  # predicted output (`prediction`): drafts for speculation
    tenant: str | None = None  # who asked (an account): waiting requests are admitted fairly across tenants


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"  # the request could not run (its grammar failed to compile); stop_reason says why


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # best first


@dataclass(slots=True)
class RequestTimings:
    """time.monotonic() marks; perf metrics are differences between them."""

    arrival: float
    scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None


@dataclass(slots=True)
class RequestOutput:
    """A delta: one per request per step in which something happened to it."""

    request_id: str
    new_token_ids: list[int]
    text_delta: str
    logprobs: list[TokenLogprob] | None
    prompt_logprobs: list[TokenLogprob | None] | None  # first delta only; entry 0 is None
    finish_reason: FinishReason | None
    stop_reason: str | int | None  # matched stop string or stop token id
    num_prompt_tokens: int
    num_cached_tokens: int
    timings: RequestTimings
    num_draft_tokens: int = 0  # drafted tokens verified so far (speculation), cumulative
    num_accepted_draft_tokens: int = 0  # of which accepted, cumulative

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the serving layer knows of a loaded model."""

    name: str
    architecture: str
    max_model_len: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    generation_defaults: dict[str, float] = field(default_factory=dict)  # generation_config.json sampling keys
    tool_call_format: str | None = None  # how it writes tool calls (serving/tools/formats.py); None: from its template


# --- inside the engine: scheduler <-> executor -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledRequest:
    request_id: str
    token_ids: list[int]  # tokens to compute this step (prefill chunk or the last sampled token)
    start_pos: int  # num_computed_tokens before this step
    block_ids: list[int]  # whole block table after allocation
    sample: bool  # False for a non-final prefill chunk
    sampling: SamplingParams
    output_token_ids: list[int]  # generated so far (penalties); shared, read-only for the runner
    prompt_token_ids: list[int]  # (repetition penalty counts prompt tokens too)
    seed_offset: int  # tokens generated so far: seeded generators resume deterministically
    compute_prompt_logprobs: bool  # prompt logprobs wanted for the tokens of this chunk
    draft_token_ids: tuple[int, ...] = ()  # proposed continuation, at the end of token_ids: each is verified

    @property
    def num_sampled(self) -> int:
        """Positions sampled this step: the last, plus one per draft."""
        return 1 + len(self.draft_token_ids) if self.sample else 0


@dataclass(frozen=True, slots=True)
class TokenBitmask:
    """The tokens that constrained requests may sample this step: bit t of row i (word t // 32,
    bit t % 32) set = token t allowed for `request_ids[i]`. Tokens past the mask are disallowed.
    A request with drafts has one row per sampled position, in order."""

    request_ids: list[str]
    bitmask: np.ndarray  # [num_constrained, ceil(vocab / 32)] int32


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    requests: list[ScheduledRequest]
    num_tokens: int
    freed_request_ids: frozenset[str] = frozenset()  # the runner drops any per-request state
    token_bitmask: TokenBitmask | None = None  # set by the core when constrained requests sample

    @property
    def is_empty(self) -> bool:
        return not self.requests


@dataclass(slots=True)
class ModelRunnerOutput:
    """Python lists only: this record crosses the torch boundary."""

    request_ids: list[str]  # the requests that sampled, in order; a request with drafts once per position
    sampled_token_ids: list[int]
    logprobs: list[TokenLogprob | None] | None  # aligned with request_ids; None rows did not ask
    prompt_logprobs: dict[str, list[TokenLogprob | None]] = field(default_factory=dict)  # per chunk


class ModelExecutor(Protocol):
    """Runs one scheduled batch on the model. Implemented by `engine/runner/model_runner.py`."""

    num_kv_blocks: int

    def execute(self, batch: SchedulerOutput) -> ModelRunnerOutput:
        """Compute the batch's tokens, write their KV, sample where `sample` is set."""
        ...


class EngineClient(Protocol):
    """All that the serving layer sees of an engine."""

    model_info: ModelInfo
    tokenizer: Tokenizer

    def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        """Submit a request; iterate its deltas. Closing the iterator aborts the request."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request now; its KV blocks are freed at the next step."""
        ...
