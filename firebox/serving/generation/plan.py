"""Resolved options + prepared prompts -> engine requests and choice states (the n fan-out)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from firebox.engine.types import EngineRequest, SamplingParams, StructuredOutputSpec
from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.params import GenerationParams
from firebox.serving.generation.choice import ChoiceState
from firebox.serving.errors import InvalidRequestError, RateLimitedError
from firebox.serving.generation.options import GenerationOptions, resolve_options
from firebox.serving.prompt import PreparedPrompt, check_prompt_fits, fit_max_tokens
from firebox.serving.reasoning import ThinkingMode
from firebox.serving.inflight import InflightLimiter
from firebox.serving.records import RequestContext, RequestRecorder, refusal_record
from firebox.serving.registry import ModelHandle
from firebox.serving.generation.run import GenerationRun, RunInfo
from firebox.serving.generation.sampling import LogprobMode, for_choice, sampling_options

MAX_CHOICES = 1024  # prompts x n in one request


@dataclass(frozen=True, slots=True)
class Plan:
    options: GenerationOptions
    requests: list[EngineRequest]
    choices: list[ChoiceState]
    sampling_options: dict

    @property
    def logprobs(self) -> LogprobMode:
        return self.options.logprobs


def _echo_text(tokenizer: Tokenizer, prompt: PreparedPrompt, count: int) -> str:
    if count == len(prompt.token_ids):
        return prompt.text
    return tokenizer.decode(prompt.token_ids[len(prompt.token_ids) - count :], skip_special_tokens=False)


def plan_generation(
    req: GenerationParams,
    handle: ModelHandle,
    ctx: RequestContext,
    prompts: Sequence[PreparedPrompt],
    param: str,
    tool_grammar: StructuredOutputSpec | None = None,
    *,
    thinking: ThinkingMode | None = None,
    keep_special_tokens: bool = False,
) -> Plan:
    if len(prompts) * req.n > MAX_CHOICES:
        raise InvalidRequestError(f"at most {MAX_CHOICES} choices (prompts x n) per request", param="n")
    info, tokenizer = handle.engine.model_info, handle.engine.tokenizer
    options = resolve_options(
        req, info, ctx, tool_grammar, thinking=thinking, keep_special_tokens=keep_special_tokens, tokenizer=tokenizer
    )
    requests, choices = [], []
    for prompt_index, prompt in enumerate(prompts):
        num_prompt_tokens = len(prompt.token_ids)
        check_prompt_fits(num_prompt_tokens, info.max_model_len, param)
        fitted = fit_max_tokens(num_prompt_tokens, info.max_model_len, options.max_tokens, options.context_policy)
        count = options.echo_count(num_prompt_tokens)
        echo_text = _echo_text(tokenizer, prompt, count) if count else ""
        for sibling in range(options.n):
            index = len(choices)
            sampling = for_choice(options.sampling, fitted, sibling)
            requests.append(_engine_request(options, ctx, index, prompt, sampling))
            choice = ChoiceState(index, prompt_index, prompt, count, echo_text, num_prompt_tokens=num_prompt_tokens)
            choices.append(choice)
    return Plan(options, requests, choices, sampling_options(requests[0].sampling))


def _engine_request(
    options: GenerationOptions, ctx: RequestContext, index: int, prompt: PreparedPrompt, sampling: SamplingParams
) -> EngineRequest:
    return EngineRequest(
        request_id=f"{ctx.request_id}-{index}",
        prompt_token_ids=tuple(prompt.token_ids),
        sampling=sampling,
        arrival_time=ctx.arrival_time,
        priority=options.priority,
        cache_salt=options.cache_salt,
        tenant=options.tenant,
        affinity_key=options.affinity_key,
        structured_output=options.structured_output,
        prediction_token_ids=options.prediction_token_ids,
    )


def start_run(
    handle: ModelHandle, ctx: RequestContext, plan: Plan, recorder: RequestRecorder, inflight: InflightLimiter | None = None
) -> GenerationRun:
    """The run of `plan`, its choices counted against the caller's in-flight limits (a 429 over them)."""
    options = plan.options
    lease = None
    if inflight is not None:
        try:
            lease = inflight.acquire(ctx.principal, len(plan.requests))
        except RateLimitedError as exc:
            record = refusal_record(ctx, handle.model.name, handle.deployment, exc.status_code, options.user, options.metadata)
            recorder.emit(record)
            raise
    info = RunInfo(
        handle, ctx, time.monotonic(), plan.sampling_options, options.user, options.metadata,
        num_prediction_tokens=len(options.prediction_token_ids),
    )  # fmt: skip
    return GenerationRun(info, plan.requests, plan.choices, recorder, lease)
