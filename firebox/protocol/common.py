"""Wire records shared by the endpoints: usage, logprobs (both forms), raw output, errors.

Names and shapes follow the `fireworks-ai` SDK's `types/shared/` and the `openai` SDK.
Requests forbid unknown fields; responses omit the Fireworks extension fields that are unset
(`omitted_if_none`), while OpenAI's own nullable fields (`usage`, `finish_reason`, `logprobs`)
are always written, as OpenAI writes them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins valid pairs, so any left is unpaired


def _is_none(value: object) -> bool:
    return value is None


def omitted_if_none(**kwargs: Any) -> Any:
    """A response field that is left out of the JSON when it is None."""
    return Field(default=None, exclude_if=_is_none, **kwargs)


def reject_unpaired_surrogates(value: Any) -> Any:
    """JSON can escape half a UTF-16 pair (`"\\ud800"`), which is no character: the tokenizer
    and the usage database cannot take such text, so it is refused here, naming the field.
    Nested models are skipped: they check their own fields."""
    pending = [value]
    while pending:  # not recursive: free-form fields (tools, response_format) may nest deeply
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValueError("text must be valid Unicode; it holds an unpaired UTF-16 surrogate")
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return value


class RequestModel(BaseModel):
    """Base of every request body: an unknown field is an error, never ignored; text is Unicode."""

    model_config = ConfigDict(extra="forbid")

    _check_text = field_validator("*")(reject_unpaired_surrogates)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(RequestModel):
    include_usage: StrictBool | None = None
    """OpenAI: add a final chunk with empty `choices` that carries the usage."""


class PromptTokensDetails(ResponseModel):
    cached_tokens: int | None = None


class CompletionTokensDetails(ResponseModel):
    reasoning_tokens: int = 0
    """Output tokens spent thinking (between `<think>` and `</think>`), counted in completion_tokens."""

    accepted_prediction_tokens: int = 0
    """Drafted tokens of the `prediction` that the output kept (OpenAI's predicted outputs)."""

    rejected_prediction_tokens: int = 0
    """Drafted tokens of the `prediction` that the output did not keep."""


class UsageInfo(ResponseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class LogProbs(ResponseModel):
    """Legacy form (`logprobs` as an integer)."""

    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] | None = None
    token_ids: list[int] | None = None


class NewLogProbsContentTopLogProbs(ResponseModel):
    token: str
    logprob: float
    token_id: int
    bytes: list[int] | None = None


class NewLogProbsContent(ResponseModel):
    token: str
    logprob: float
    sampling_logprob: float | None = None
    bytes: list[int]
    token_id: int
    text_offset: int
    top_logprobs: list[NewLogProbsContentTopLogProbs] = Field(default_factory=list)


class NewLogProbs(ResponseModel):
    """OpenAI form (`logprobs: true`)."""

    content: list[NewLogProbsContent] | None = None


class RawOutput(ResponseModel):
    prompt_fragments: list[str | int]
    prompt_token_ids: list[int]
    completion: str
    completion_token_ids: list[int] | None = None
    completion_logprobs: NewLogProbs | None = omitted_if_none()


class ErrorDetail(ResponseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(ResponseModel):
    error: ErrorDetail


ContextLengthBehavior = Literal["error", "truncate"]
ServiceTier = Literal["auto", "default", "flex", "priority"]
