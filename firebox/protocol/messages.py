"""Anthropic Messages API: `POST /v1/messages` and `/v1/messages/count_tokens`, their answers,
stream events and error body, as the `anthropic` SDK types them (`types/message*.py`,
`types/raw_*_event.py`).

Requests forbid unknown fields, as every firebox request does. Content blocks firebox cannot
take (images, documents, server tools' results) are declared so that serving refuses them by
name; `cache_control` is accepted wherever Anthropic allows it, since firebox caches every
prompt prefix anyway (marked or not).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictFloat, field_validator

from firebox.protocol.chat import ToolName
from firebox.protocol.common import ErrorDetail, RequestModel, ResponseModel
from firebox.protocol.limits import MAX_MESSAGES, MAX_TOOLS, Flag, Identifier, PositiveCount, StopString
from firebox.protocol.params import MAX_STOP, Probability, TopK

# --- request -------------------------------------------------------------------------------------


class CacheControl(RequestModel):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(RequestModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: None = None  # firebox's answers carry none; sent back, they are null


class UnsupportedBlock(RequestModel):
    """A block Anthropic knows and firebox does not take: kept so that the 400 names it."""

    model_config = ConfigDict(extra="allow")

    type: Literal[
        "image",
        "document",
        "search_result",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
    ]


class ToolUseBlock(RequestModel):
    """An earlier call of the assistant's."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(RequestModel):
    """The answer to the call `tool_use_id`, in a user turn."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | UnsupportedBlock, Field(discriminator="type")]] | None = None
    is_error: Flag | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(RequestModel):
    """An earlier turn's reasoning, sent back."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


ContentBlock = Annotated[
    TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | UnsupportedBlock, Field(discriminator="type")
]


class InputMessage(RequestModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(RequestModel):
    """A client tool; `strict` is accepted either way: the input is always enforced by constrained
    decoding."""

    name: ToolName
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    strict: Flag | None = None
    cache_control: CacheControl | None = None

    @field_validator("input_schema")
    @classmethod
    def _is_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('input_schema must be a JSON schema with "type": "object"')
        return value


class ToolChoiceAuto(RequestModel):
    type: Literal["auto"]
    disable_parallel_tool_use: Flag | None = None


class ToolChoiceAny(RequestModel):
    type: Literal["any"]
    disable_parallel_tool_use: Flag | None = None


class ToolChoiceTool(RequestModel):
    type: Literal["tool"]
    name: ToolName
    disable_parallel_tool_use: Flag | None = None


class ToolChoiceNone(RequestModel):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class ThinkingConfig(RequestModel):
    """Extended thinking; handed to the chat request's `thinking`, the reasoning controls
    ("adaptive": thinking on, as long as the model wants)."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: PositiveCount | None = None


class Metadata(RequestModel):
    user_id: Identifier | None = None


class MessagesPrompt(RequestModel):
    """What makes the prompt: the fields `count_tokens` takes."""

    model: str
    messages: Annotated[list[InputMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    cache_control: CacheControl | None = None


StopSequences = Annotated[list[Annotated[StopString, Field(min_length=1)]], Field(max_length=MAX_STOP)]


class MessagesRequest(MessagesPrompt):
    max_tokens: PositiveCount | None = None  # optional, as on Fireworks: up to the context
    temperature: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] | None = None  # Anthropic's range
    top_p: Probability | None = None
    top_k: TopK | None = None
    stop_sequences: StopSequences | None = None
    metadata: Metadata | None = None
    stream: Flag | None = None
    service_tier: Literal["auto", "standard_only"] | None = None  # both: firebox's default tier


# --- answer --------------------------------------------------------------------------------------


class TextContent(ResponseModel):
    type: Literal["text"] = "text"
    text: str
    citations: None = None


class ToolUseContent(ResponseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ThinkingContent(ResponseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""  # firebox does not sign its reasoning


OutputBlock = TextContent | ToolUseContent | ThinkingContent
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessagesUsage(ResponseModel):
    """Anthropic's split: `input_tokens` were computed, `cache_read_input_tokens` came from the
    prefix cache (their sum is the prompt); firebox writes no cache entries a client pays for."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class MessageResponse(ResponseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[OutputBlock]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: MessagesUsage


class TokenCount(ResponseModel):
    input_tokens: int


# --- stream events (each sent as `event: <type>` + `data: <json>`) --------------------------------


class MessageStartEvent(ResponseModel):
    type: Literal["message_start"] = "message_start"
    message: MessageResponse


class ContentBlockStartEvent(ResponseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: OutputBlock


class TextDelta(ResponseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(ResponseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(ResponseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class ContentBlockDeltaEvent(ResponseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | InputJsonDelta | ThinkingDelta


class ContentBlockStopEvent(ResponseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(ResponseModel):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDeltaEvent(ResponseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: MessagesUsage  # totals, as Anthropic now sends them


class MessageStopEvent(ResponseModel):
    type: Literal["message_stop"] = "message_stop"


# --- errors --------------------------------------------------------------------------------------


class MessagesErrorDetail(ResponseModel):
    type: str
    message: str


class MessagesErrorResponse(ResponseModel):
    """The error body (and the stream's `error` event) on the Messages routes."""

    type: Literal["error"] = "error"
    error: MessagesErrorDetail

    @classmethod
    def of(cls, detail: ErrorDetail) -> MessagesErrorResponse:
        """Anthropic's form of firebox's (OpenAI-shaped) error; it has no `param`, so the message
        names the field."""
        kind = _ERROR_TYPES.get(detail.type, detail.type if detail.type in _ANTHROPIC_TYPES else "api_error")
        if detail.code == "PAYLOAD_TOO_LARGE":
            kind = "request_too_large"
        message = detail.message
        if detail.param and detail.param not in message:
            message = f"{message}, field: '{detail.param}'"
        return cls(error=MessagesErrorDetail(type=kind, message=message))


_ANTHROPIC_TYPES = {
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "rate_limit_error",
}  # fmt: skip
_ERROR_TYPES = {"service_unavailable": "overloaded_error", "server_error": "api_error"}


MessagesEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | MessagesErrorResponse
)
