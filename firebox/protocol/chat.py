"""Chat completions: `POST /v1/chat/completions` request, response and stream chunk."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from firebox.protocol.common import (
    LogProbs,
    NewLogProbs,
    RawOutput,
    RequestModel,
    ResponseModel,
    UsageInfo,
    omitted_if_none,
)
from firebox.protocol.params import GenerationParams, reject_unsupported

Role = Literal["system", "user", "assistant", "tool"]


class ContentPart(RequestModel):
    type: str
    text: str | None = None
    image_url: dict[str, Any] | None = None
    video_url: dict[str, Any] | None = None


class ChatMessage(RequestModel):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _developer_is_system(cls, value: Any) -> Any:
        # OpenAI's newer clients send instructions as "developer"; open models' templates know
        # them as "system" (the Responses endpoint maps them the same way)
        return "system" if value == "developer" else value


class ChatCompletionRequest(GenerationParams):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    prompt_truncate_len: Annotated[int, Field(ge=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    safe_tokenization: bool | None = None

    _check_unsupported_chat = field_validator(
        "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "safe_tokenization"
    )(reject_unsupported)


class ResponseMessage(ResponseModel):
    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = omitted_if_none()
    tool_calls: list[dict[str, Any]] | None = omitted_if_none()


class ChatChoice(ResponseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: NewLogProbs | LogProbs | None = None
    raw_output: RawOutput | None = omitted_if_none()
    token_ids: list[int] | None = omitted_if_none()


class ChatCompletionResponse(ResponseModel):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo | None = None
    perf_metrics: dict[str, Any] | None = omitted_if_none()
    prompt_token_ids: list[int] | None = omitted_if_none()


class ChoiceDelta(ResponseModel):
    role: str | None = omitted_if_none()
    content: str | None = None
    reasoning_content: str | None = omitted_if_none()
    tool_calls: list[dict[str, Any]] | None = omitted_if_none()


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: NewLogProbs | LogProbs | None = None
    raw_output: RawOutput | None = omitted_if_none()
    token_ids: list[int] | None = omitted_if_none()


class ChatCompletionChunk(ResponseModel):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None
    perf_metrics: dict[str, Any] | None = omitted_if_none()
    prompt_token_ids: list[int] | None = omitted_if_none()
