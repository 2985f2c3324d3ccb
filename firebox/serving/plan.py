"""Prepared prompts + request fields -> engine requests and choice states (the n fan-out)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from firebox.engine.types import EngineRequest, SamplingParams
from firebox.loader.tokenizer import Tokenizer
from firebox.protocol.params import GenerationParams
from firebox.serving.choice import ChoiceState
from firebox.serving.errors import InvalidRequestError
from firebox.serving.prompt import PreparedPrompt, check_prompt_fits, fit_max_tokens
from firebox.serving.records import RequestContext, RequestRecorder
from firebox.serving.registry import ModelHandle
from firebox.serving.run import GenerationRun, RunInfo
from firebox.serving.sampling import (
    LogprobMode,
    build_sampling,
    for_choice,
    logprob_mode,
    requested_max_tokens,
    sampling_options,
)

MAX_CHOICES = 1024  # prompts x n in one request
PRIORITY_TIER = -1  # service_tier "priority": scheduled ahead of the default tier (0)


@dataclass(frozen=True, slots=True)
class Plan:
    logprobs: LogprobMode
    requests: list[EngineRequest]
    choices: list[ChoiceState]
    sampling_options: dict


def echo_count(req: GenerationParams, num_prompt_tokens: int) -> int:
    if req.echo:
        return num_prompt_tokens
    if req.echo_last is not None:
        return min(req.echo_last, num_prompt_tokens)
    return 0


def _echo_text(tokenizer: Tokenizer, prompt: PreparedPrompt, count: int) -> str:
    if count == len(prompt.token_ids):
        return prompt.text
    return tokenizer.decode(prompt.token_ids[len(prompt.token_ids) - count :], skip_special_tokens=False)


def plan_generation(
    req: GenerationParams, handle: ModelHandle, ctx: RequestContext, prompts: Sequence[PreparedPrompt], param: str
) -> Plan:
    if len(prompts) * req.n > MAX_CHOICES:
        raise InvalidRequestError(f"at most {MAX_CHOICES} choices (prompts x n) per request", param="n")
    info, tokenizer = handle.engine.model_info, handle.engine.tokenizer
    mode = logprob_mode(req)
    is_echo = bool(req.echo) or bool(req.echo_last)
    base = _base_sampling(req, handle, mode, is_echo)
    max_tokens = requested_max_tokens(req)
    requests, choices = [], []
    for prompt_index, prompt in enumerate(prompts):
        check_prompt_fits(len(prompt.token_ids), info.max_model_len, param)
        fitted = fit_max_tokens(
            len(prompt.token_ids), info.max_model_len, max_tokens, req.context_length_exceeded_behavior
        )
        count = echo_count(req, len(prompt.token_ids))
        echo_text = _echo_text(tokenizer, prompt, count) if count else ""
        for sibling in range(req.n):
            index = len(choices)
            requests.append(_engine_request(req, ctx, index, prompt, for_choice(base, fitted, sibling)))
            choices.append(
                ChoiceState(index, prompt_index, prompt, count, echo_text, num_prompt_tokens=len(prompt.token_ids))
            )
    return Plan(mode, requests, choices, sampling_options(requests[0].sampling))


def _base_sampling(req: GenerationParams, handle: ModelHandle, mode: LogprobMode, is_echo: bool) -> SamplingParams:
    try:
        return build_sampling(req, handle.engine.model_info, mode, is_echo)
    except ValueError as exc:  # a model default outside the sampler's range
        raise InvalidRequestError(f"invalid sampling parameters: {exc}") from exc


def _engine_request(
    req: GenerationParams, ctx: RequestContext, index: int, prompt: PreparedPrompt, sampling: SamplingParams
) -> EngineRequest:
    return EngineRequest(
        request_id=f"{ctx.request_id}-{index}",
        prompt_token_ids=tuple(prompt.token_ids),
        sampling=sampling,
        arrival_time=ctx.arrival_time,
        priority=PRIORITY_TIER if req.service_tier == "priority" else 0,
        cache_salt=req.prompt_cache_isolation_key or ctx.cache_isolation_key,
        affinity_key=req.prompt_cache_key or ctx.session_affinity or req.user,
    )


def start_run(
    req: GenerationParams, handle: ModelHandle, ctx: RequestContext, plan: Plan, recorder: RequestRecorder
) -> GenerationRun:
    info = RunInfo(handle, ctx, time.monotonic(), plan.sampling_options, req.user, req.metadata)
    return GenerationRun(info, plan.requests, plan.choices, recorder)
