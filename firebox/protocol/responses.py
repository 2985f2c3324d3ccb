"""Responses API: `POST /v1/responses` request, the response object and the list shapes.

Shapes follow the `openai` SDK's `types/responses/` (`Response`, `ResponseUsage`,
`ResponseOutputMessage`, `ResponseFunctionToolCall`, `ResponseItemList`). Every top-level field the
SDK's `client.responses.create` can send is declared, so none is an "unknown field": firebox
implements it, or accepts only its neutral values and answers anything else with a 400 naming the
field (`_NEUTRAL`). The sampling fields (and Fireworks' extensions) are the chat request's own, and
function tools are chat's function definitions with the `type` beside them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, create_model, field_validator

from firebox.protocol.chat import FunctionDefinition, NamedToolChoice
from firebox.protocol.common import RequestModel, ResponseModel, omitted_if_none, reject_unpaired_surrogates
from firebox.protocol.limits import PositiveCount
from firebox.protocol.params import MAX_TOP_LOGPROBS, GenerationParams, JsonSchemaDocument, JsonSchemaFormat, ResponseFormat

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
LOGPROBS_INCLUDE = "message.output_text.logprobs"

Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class LenientModel(BaseModel):
    """Input items and parts keep unknown keys, so that serving can name what it does not support
    (an image part, a tool output) instead of a generic "extra inputs" error."""

    model_config = ConfigDict(extra="allow")

    _check_text = field_validator("*")(reject_unpaired_surrogates)


class InputContentPart(LenientModel):
    type: str
    text: str | None = None


class InputItem(LenientModel):
    """A message item (`{role, content}` with an optional `type: "message"`, or an earlier
    assistant output message), an earlier `function_call`, or a `function_call_output` (the
    answer to a call); serving refuses any other item type, and fields of another type's item."""

    type: str = "message"
    id: str | None = None
    role: str | None = None
    content: str | list[InputContentPart] | None = None
    status: str | None = None
    phase: str | None = None
    call_id: str | None = None  # function_call, function_call_output
    name: str | None = None  # function_call
    arguments: str | None = None  # function_call: JSON text
    output: str | list[InputContentPart] | None = None  # function_call_output


class TextFormatSpec(RequestModel):
    """`text.format`: free text, any JSON object, or output that validates against a JSON schema
    (the Responses API puts `name`, `schema` and `strict` beside the type)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(max_length=64)] | None = None
    description: str | None = None
    schema_: JsonSchemaDocument | None = Field(default=None, alias="schema")
    strict: bool | None = None

    def as_response_format(self) -> ResponseFormat:
        """The chat-style `response_format` of the same meaning."""
        if self.type == "json_schema":
            schema = JsonSchemaFormat(name=self.name, description=self.description, schema=self.schema_, strict=self.strict)
            return ResponseFormat(type="json_schema", json_schema=schema)
        return ResponseFormat(type=self.type, schema=self.schema_)


class TextFormat(RequestModel):
    format: TextFormatSpec | None = None
    verbosity: Literal["low", "medium", "high"] | None = None

    @field_validator("verbosity")
    @classmethod
    def _default_verbosity_only(cls, value: str | None) -> str | None:
        if value not in (None, "medium"):
            raise ValueError("verbosity controls are not supported; only 'medium'")
        return value


class FunctionToolParam(FunctionDefinition):
    """`{"type": "function", "name", "description", "parameters", "strict"}`: a function the model
    may call (chat's definition, flattened)."""

    type: Literal["function"]


def _function_tools_only(value: Any) -> Any:
    """Server-run tools (web search, file search, MCP, ...) are refused by their type."""
    for i, tool in enumerate(value if isinstance(value, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise ValueError(
                f"tools[{i}] is of type {kind!r}, which firebox does not support: it runs no server-side tools "
                "(web search, file search, MCP, code interpreter, ...); only function tools are supported"
            )
    return value


def _function_choice_only(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") != "function":
        raise ValueError(
            f"tool_choice of type {value.get('type')!r} is not supported; give 'none', 'auto', 'required' "
            'or {"type": "function", "name": ...}'
        )
    return value


class StreamOptions(RequestModel):
    include_obfuscation: bool | None = None


class ReasoningConfig(RequestModel):
    """`reasoning`: whether a thinking model thinks (`effort`; "none" turns it off where the chat
    template can). firebox writes no reasoning summaries: the thinking itself is the reasoning item."""

    effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    summary: None = None
    generate_summary: None = None


def _is_empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


# field -> (test for the values that change nothing, why the rest are refused)
_NEUTRAL: dict[str, tuple[Any, str]] = {
    "background": (lambda v: not v, "background responses are not supported"),
    "conversation": (_is_empty, "conversations are not supported; use previous_response_id"),
    "prompt": (_is_empty, "prompt templates are not supported"),
    "access_programs": (_is_empty, "access programs are not supported"),
    "background_options": (_is_empty, "background responses are not supported"),
    "context_management": (_is_empty, "context management is not supported; use truncation"),
    "image": (_is_empty, "image options are not supported"),
    "moderation": (_is_empty, "moderation is not supported"),
    "prompt_cache_options": (_is_empty, "prompt cache options are not supported"),
    "prompt_cache_retention": (lambda v: v in (None, "in_memory"), "the prefix cache lives in memory only"),
    "stream_options": (
        lambda v: v is None or not v.include_obfuscation,
        "stream obfuscation is not supported",
    ),
}


def _reject_non_neutral(value: Any, info: ValidationInfo) -> Any:
    is_neutral, why = _NEUTRAL[info.field_name]
    if not is_neutral(value):
        raise ValueError(f"'{info.field_name}' is not supported by firebox: {why}")
    return value


# fields a responses request shares with a chat request, declared exactly as chat declares them
# (type, bounds, default); the sampling extensions (top_k, min_p, penalties, ...) come through
# the openai SDK's `extra_body`
CHAT_FIELDS = (
    "temperature", "top_p", "top_k", "min_p", "typical_p", "frequency_penalty", "presence_penalty",
    "repetition_penalty", "seed", "logit_bias", "stop", "ignore_eos", "metadata", "user", "service_tier",
    "prompt_cache_key", "prompt_cache_isolation_key", "perf_metrics_in_response",
)  # fmt: skip
_CHAT_DECLARATIONS = {name: GenerationParams.model_fields[name] for name in CHAT_FIELDS}
_ChatFields = create_model(
    "_ChatFields", __base__=RequestModel, **{name: (f.annotation, f) for name, f in _CHAT_DECLARATIONS.items()}
)


class ResponseCreateRequest(_ChatFields):  # type: ignore[misc,valid-type]
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool | None = None  # None: true
    stream: bool | None = None
    max_output_tokens: PositiveCount | None = None  # bounded like max_tokens (int32)
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    include: list[Includable] | None = None
    safety_identifier: Annotated[str, Field(max_length=128)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    text: TextFormat | None = None
    tools: list[FunctionToolParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: PositiveCount | None = None  # the most function calls kept in the output

    reasoning: ReasoningConfig | None = None

    # declared so that they are known; only their neutral values pass (see `_NEUTRAL`)
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    background_options: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    image: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    stream_options: StreamOptions | None = None

    _check_neutral = field_validator(*_NEUTRAL)(_reject_non_neutral)
    _check_tools = field_validator("tools", mode="before")(_function_tools_only)
    _check_tool_choice = field_validator("tool_choice", mode="before")(_function_choice_only)

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} metadata pairs")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY or len(item) > MAX_METADATA_VALUE:
                raise ValueError(
                    f"metadata keys are at most {MAX_METADATA_KEY} characters, values at most {MAX_METADATA_VALUE}"
                )
        return value

    @property
    def wants_store(self) -> bool:
        return self.store is not False

    @property
    def wants_logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or ())


# --- the response object ---------------------------------------------------------------------------


class TopLogprob(ResponseModel):
    token: str
    bytes: list[int]
    logprob: float


class OutputLogprob(ResponseModel):
    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list[TopLogprob]


class OutputText(ResponseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[OutputLogprob] = Field(default_factory=list)


class OutputMessage(ResponseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class OutputFunctionCall(ResponseModel):
    """A call the model made; the client runs it and answers with a `function_call_output` item."""

    id: str  # fc_..., the item's id
    type: Literal["function_call"] = "function_call"
    call_id: str  # call_..., what the answer names
    name: str
    arguments: str  # JSON text
    status: Literal["in_progress", "completed", "incomplete"]


class ReasoningText(ResponseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputReasoning(ResponseModel):
    """What a thinking model thought before it answered (its `<think>` text)."""

    id: str  # rs_...
    type: Literal["reasoning"] = "reasoning"
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ReasoningText]
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = Annotated[OutputMessage | OutputFunctionCall | OutputReasoning, Field(discriminator="type")]


class InputTokensDetails(ResponseModel):
    cached_tokens: int
    cache_write_tokens: int = 0  # no explicit cache writes: prefix caching is automatic


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class ResponseUsage(ResponseModel):
    """OpenAI's names and Fireworks' chat-style names side by side."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int
    prompt_tokens: int
    completion_tokens: int


class IncompleteDetails(ResponseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(ResponseModel):
    code: str
    message: str


class ResponseObject(ResponseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    safety_identifier: str | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}, "verbosity": "medium"})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    perf_metrics: dict[str, Any] | None = omitted_if_none()


# --- lists -----------------------------------------------------------------------------------------


class ObjectList(ResponseModel):
    """A page of a list: `GET /v1/responses` (stored responses, newest first unless `order=asc`)
    and `GET /v1/responses/{id}/input_items` (OpenAI's `ResponseItemList`)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ResponseDeleted(ResponseModel):
    """The `openai` SDK types no body for a delete; Fireworks answers a message. Both are here."""

    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
    message: str
