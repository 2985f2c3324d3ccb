"""A generation request resolved once into the typed record every later stage reads.

Chat, completions and the Responses API arrive as different wire models; `resolve_options` turns
their shared fields into `GenerationOptions` at the start of serving (sampling with the model's
defaults, logprobs form, echo, output format, scheduling hints), so that planning, the fan-out and
the run never go back to the pydantic request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from firebox.engine.types import ModelInfo, SamplingParams, StructuredOutputSpec
from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.common import ContextLengthBehavior
from firebox.protocol.params import GenerationParams
from firebox.serving.errors import InvalidRequestError
from firebox.serving.reasoning import ThinkingMode, answer_grammar
from firebox.serving.records import RequestContext
from firebox.serving.generation.sampling import LogprobMode, build_sampling, logprob_mode, requested_max_tokens
from firebox.serving.structured_output import structured_output_spec

# service_tier "priority": scheduled ahead of the default tier (0), for the operator's keys only;
# anyone else asking for it is served at the default tier (OpenAI clients send it casually, so it
# is not refused), and the response says "default"
PRIORITY_TIER = -1


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    sampling: SamplingParams  # max_tokens fitted per prompt and seed + i per choice later
    logprobs: LogprobMode
    max_tokens: int | None  # as asked for; None = up to the context
    context_policy: ContextLengthBehavior | None
    n: int
    echo_all: bool  # echo the whole prompt
    echo_last: int | None  # or only its last N tokens
    structured_output: StructuredOutputSpec | None
    prediction_token_ids: tuple[int, ...]  # `prediction` / `speculation`, tokenized: drafts to verify
    priority: int
    tenant: str  # the account: waiting requests are admitted fairly across accounts
    cache_salt: str | None
    affinity_key: str | None
    user: str | None
    metadata: dict[str, str] | None

    def echo_count(self, num_prompt_tokens: int) -> int:
        if self.echo_all:
            return num_prompt_tokens
        if self.echo_last is not None:
            return min(self.echo_last, num_prompt_tokens)
        return 0


def resolve_options(
    req: GenerationParams,
    info: ModelInfo,
    ctx: RequestContext,
    tool_grammar: StructuredOutputSpec | None = None,
    *,
    thinking: ThinkingMode | None = None,
    keep_special_tokens: bool = False,
    tokenizer: Tokenizer | None = None,
) -> GenerationOptions:
    """`tool_grammar`: the grammar of the calls the request's tools allow, which takes the place of
    `response_format` (the two together are refused: a call's JSON is not the answer's format).
    `thinking`: how the output of a thinking model begins; a grammar then constrains only the
    answer after the thinking. `keep_special_tokens`: the calls' tags are special tokens, which
    the output parsing must see in the text."""
    mode = logprob_mode(req)
    structured_output = structured_output_spec(req.response_format)
    if tool_grammar is not None:
        if structured_output is not None:
            raise InvalidRequestError(
                "response_format cannot be combined with tools that may be called; "
                'pass tool_choice "none" or leave response_format out',
                param="response_format",
            )
        structured_output = tool_grammar
    is_echo = bool(req.echo) or bool(req.echo_last)
    sampling = _base_sampling(req, info, mode, is_echo)
    return GenerationOptions(
        sampling=replace(sampling, skip_special_tokens=False) if keep_special_tokens else sampling,
        logprobs=mode,
        max_tokens=requested_max_tokens(req),
        context_policy=req.context_length_exceeded_behavior,
        n=req.n,
        echo_all=bool(req.echo),
        echo_last=req.echo_last,
        structured_output=answer_grammar(structured_output, thinking),
        prediction_token_ids=prediction_token_ids(req, tokenizer) if tokenizer is not None else (),
        priority=PRIORITY_TIER if req.service_tier == "priority" and ctx.principal.is_admin else 0,
        cache_salt=ctx.cache_salt(req.prompt_cache_isolation_key),
        tenant=ctx.principal.account_id,
        affinity_key=req.prompt_cache_key or ctx.session_affinity or req.user,
        user=req.user,
        metadata=req.metadata,
    )


def prediction_token_ids(req: GenerationParams, tokenizer: Tokenizer) -> tuple[int, ...]:
    """The predicted output as tokens: `prediction` (OpenAI) or `speculation` (Fireworks' raw form)."""
    if req.prediction is not None and req.speculation is not None:
        raise InvalidRequestError("give prediction or speculation, not both", param="speculation")
    predicted = req.prediction if req.prediction is not None else req.speculation
    if predicted is None:
        return ()
    if isinstance(predicted, list):
        if any(token_id >= tokenizer.vocab_size for token_id in predicted):
            raise InvalidRequestError(
                f"speculation token ids must be below the vocabulary size {tokenizer.vocab_size}", param="speculation"
            )
        return tuple(predicted)
    text = predicted if isinstance(predicted, str) else predicted.text
    return tuple(tokenizer.encode(text))


def _base_sampling(req: GenerationParams, info: ModelInfo, mode: LogprobMode, is_echo: bool) -> SamplingParams:
    try:
        return build_sampling(req, info, mode, is_echo)
    except ValueError as exc:  # a model default outside the sampler's range
        raise InvalidRequestError(f"invalid sampling parameters: {exc}") from exc
