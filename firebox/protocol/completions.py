"""Completions: `POST /v1/completions` request, response and stream chunk."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from firebox.protocol.common import LogProbs, NewLogProbs, RawOutput, ResponseModel, UsageInfo, omitted_if_none
from firebox.protocol.limits import MAX_PROMPT_TOKEN_IDS, MAX_PROMPTS, TokenId
from firebox.protocol.params import GenerationParams, reject_unsupported

TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROMPT_TOKEN_IDS)]

# str | list[str] | list[int] | list[list[int]]: several prompts give several choices
Prompt = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
)


class CompletionRequest(GenerationParams):
    prompt: Prompt
    images: list[str] | list[list[str]] | None = None

    _check_unsupported_completion = field_validator("images")(reject_unsupported)


class CompletionChoice(ResponseModel):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: LogProbs | NewLogProbs | None = None
    raw_output: RawOutput | None = omitted_if_none()
    prompt_token_ids: list[int] | None = omitted_if_none()
    token_ids: list[int] | None = omitted_if_none()


class CompletionResponse(ResponseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    perf_metrics: dict[str, Any] | None = omitted_if_none()


class CompletionChunk(ResponseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
    perf_metrics: dict[str, Any] | None = omitted_if_none()
