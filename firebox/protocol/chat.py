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
from firebox.protocol.limits import MAX_MESSAGES, MAX_TOOLS, Flag, PositiveCount
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


ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FunctionDefinition(RequestModel):
    """A function the model may call; `parameters` is a JSON schema (any object when absent).
    `strict` is accepted either way: the arguments are always enforced by constrained decoding."""

    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(RequestModel):
    name: ToolName


class NamedToolChoice(RequestModel):
    """`{"type": "function", "function": {"name": ...}}`, or Fireworks' `{"type": "function", "name": ...}`."""

    type: Literal["function"]
    function: FunctionName | None = None
    name: ToolName | None = None


ToolChoiceMode = Literal["none", "auto", "required", "any"]


class ChatCompletionRequest(GenerationParams):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    prompt_truncate_len: PositiveCount | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoiceMode | NamedToolChoice | None = None
    functions: Annotated[list[FunctionDefinition], Field(max_length=MAX_TOOLS)] | None = None  # deprecated tools
    function_call: Literal["none", "auto"] | FunctionName | None = None  # deprecated form of tool_choice
    parallel_tool_calls: Flag | None = None
    safe_tokenization: Flag | None = None

    _check_unsupported_chat = field_validator("safe_tokenization")(reject_unsupported)


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
