"""Request fields -> `SamplingParams`: request value, then the model's `generation_config.json`,
then firebox's defaults. The values used are reported in `fireworks-sampling-options`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from firebox.engine.types import ModelInfo, SamplingParams
from firebox.protocol.params import GenerationParams
from firebox.serving.errors import InvalidRequestError

DEFAULT_MAX_TOKENS = 2048
FIREBOX_DEFAULTS: dict[str, float] = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "typical_p": 1.0}
_REPORTED = (
    "temperature", "top_k", "top_p", "min_p", "typical_p",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "max_tokens",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LogprobMode:
    """How logprobs are asked for: the form of the answer and alternatives per position."""

    form: Literal["new", "legacy"] | None  # None: no logprobs
    num_top: int = 0

    @property
    def enabled(self) -> bool:
        return self.form is not None


def logprob_mode(req: GenerationParams) -> LogprobMode:
    """`logprobs: true` -> OpenAI form with `top_logprobs` alternatives; an int N -> legacy form."""
    if req.logprobs is None or req.logprobs is False:
        if req.top_logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs to be set", param="top_logprobs")
        return LogprobMode(None)
    if req.logprobs is True:
        return LogprobMode("new", req.top_logprobs or 0)
    return LogprobMode("legacy", req.logprobs if req.top_logprobs is None else req.top_logprobs)


def requested_max_tokens(req: GenerationParams) -> int | None:
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise InvalidRequestError(
            "give only one of max_tokens and max_completion_tokens", param="max_completion_tokens"
        )
    return req.max_tokens if req.max_tokens is not None else req.max_completion_tokens


def _resolved(req: GenerationParams, info: ModelInfo, name: str) -> float:
    value = getattr(req, name)
    if value is None:
        value = info.generation_defaults.get(name, FIREBOX_DEFAULTS[name])
    return value


def _logit_bias(req: GenerationParams, vocab_size: int) -> tuple[tuple[int, float], ...]:
    bias = tuple((int(key), value) for key, value in (req.logit_bias or {}).items())
    for token_id, _ in bias:
        if token_id >= vocab_size:
            raise InvalidRequestError(f"logit_bias token id {token_id} is outside the vocabulary", param="logit_bias")
    return bias


def build_sampling(req: GenerationParams, info: ModelInfo, logprobs: LogprobMode, echo: bool) -> SamplingParams:
    """Everything but max_tokens (fitted per prompt) and the per-choice seed."""
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    num_top = logprobs.num_top if logprobs.enabled else None
    return SamplingParams(
        max_tokens=0,
        temperature=_resolved(req, info, "temperature"),
        top_p=_resolved(req, info, "top_p"),
        top_k=int(_resolved(req, info, "top_k")),
        min_p=_resolved(req, info, "min_p"),
        typical_p=_resolved(req, info, "typical_p"),
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        logit_bias=_logit_bias(req, info.vocab_size),
        seed=req.seed,
        stop=stop,
        ignore_eos=bool(req.ignore_eos),
        logprobs=num_top,
        prompt_logprobs=num_top if echo else None,
    )


def for_choice(base: SamplingParams, max_tokens: int, sibling: int) -> SamplingParams:
    """Choice `sibling` of a prompt samples with seed + sibling, so n choices differ and repeat."""
    seed = None if base.seed is None else base.seed + sibling
    return dataclasses.replace(base, max_tokens=max_tokens, seed=seed)


def sampling_options(params: SamplingParams) -> dict[str, Any]:
    """The `fireworks-sampling-options` header's values."""
    return {name: getattr(params, name) for name in _REPORTED}
