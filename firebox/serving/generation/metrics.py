"""Usage and Fireworks perf metrics from the choices' engine figures and timing marks.

Perf metric keys are the `fireworks-*` header names without the prefix. Times are seconds
between `time.monotonic()` marks: arrival (the API got the request), submit (the engine got
it, after templating and tokenization), scheduled, first token, finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from firebox.protocol.common import CompletionTokensDetails, PromptTokensDetails, UsageInfo
from firebox.serving.generation.choice import ChoiceState


def _by_prompt(choices: Sequence[ChoiceState]) -> dict[int, list[ChoiceState]]:
    groups: dict[int, list[ChoiceState]] = {}
    for choice in choices:
        groups.setdefault(choice.prompt_index, []).append(choice)
    return groups


def prompt_token_counts(choices: Sequence[ChoiceState]) -> tuple[int, int]:
    """(prompt, cached) tokens: each prompt counted once however many choices continue it."""
    num_prompt = num_cached = 0
    for siblings in _by_prompt(choices).values():
        num_prompt += max(c.num_prompt_tokens or len(c.prompt.token_ids) for c in siblings)
        num_cached += min(c.num_cached_tokens for c in siblings)
    return num_prompt, num_cached


def usage(choices: Sequence[ChoiceState], has_prediction: bool = False) -> UsageInfo:
    num_prompt, num_cached = prompt_token_counts(choices)
    num_completion = sum(len(c.token_ids) for c in choices)
    return UsageInfo(
        prompt_tokens=num_prompt,
        completion_tokens=num_completion,
        total_tokens=num_prompt + num_completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=num_cached),
        completion_tokens_details=completion_details(choices, has_prediction),
    )


def completion_details(choices: Sequence[ChoiceState], has_prediction: bool) -> CompletionTokensDetails:
    """Prediction tokens are those of the request's `prediction`; drafts of the server's own
    speculation (ngram) are no prediction and are not reported as one."""
    num_drafted = sum(c.num_draft_tokens for c in choices) if has_prediction else 0
    num_accepted = sum(c.num_accepted_draft_tokens for c in choices) if has_prediction else 0
    return CompletionTokensDetails(
        reasoning_tokens=sum(c.num_reasoning_tokens for c in choices),
        accepted_prediction_tokens=num_accepted,
        rejected_prediction_tokens=num_drafted - num_accepted,
    )


def _seconds(value: float) -> float:
    return round(max(value, 0.0), 6)


def _earliest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def perf_metrics(
    choices: Sequence[ChoiceState], arrival: float, submitted: float, end: float | None, num_prediction_tokens: int = 0
) -> dict[str, Any]:
    """Metrics known so far; `end` (monotonic) once every choice has finished."""
    num_prompt, num_cached = prompt_token_counts(choices)
    metrics: dict[str, Any] = {"prompt-tokens": num_prompt, "cached-prompt-tokens": num_cached}
    metrics["tokenizer-duration"] = _seconds(submitted - arrival)
    scheduled = _earliest([c.timings.scheduled if c.timings else None for c in choices])
    first_token = _earliest([c.first_token_time for c in choices])
    if scheduled is not None:
        metrics["prefill-queue-duration"] = _seconds(scheduled - submitted)
    if first_token is not None:
        metrics["server-time-to-first-token"] = _seconds(first_token - arrival)
        if scheduled is not None:
            metrics["prefill-duration"] = _seconds(first_token - scheduled)
    if end is not None:
        metrics["server-processing-time"] = _seconds(end - arrival)
        if first_token is not None:
            metrics["generation-duration"] = _seconds(end - first_token)
    if num_prediction_tokens:
        metrics["speculation-prompt-tokens"] = num_prediction_tokens
        if end is not None:
            metrics["speculation-prompt-matched-tokens"] = sum(c.num_accepted_draft_tokens for c in choices)
    return metrics
