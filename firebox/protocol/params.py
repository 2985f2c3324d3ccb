"""Request fields that chat completions and completions share.

Every parameter the `fireworks-ai` SDK sends is declared, so that none is an "unknown field";
those firebox does not implement accept only their neutral values and are otherwise a 400
naming the field (`_UNSUPPORTED`), never accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictFloat, StrictInt, ValidationInfo, field_validator

from firebox.protocol.common import ContextLengthBehavior, RequestModel, ServiceTier, StreamOptions
from firebox.protocol.limits import MAX_LOGIT_BIAS, Count, Flag, Identifier, Metadata, Seed, StopString

MAX_TOP_LOGPROBS = 20
MAX_N = 128
MAX_TOP_K = 100  # Fireworks' range
MAX_STOP = 4  # stop sequences, as both SDKs document

Penalty = Annotated[StrictFloat, Field(ge=-2.0, le=2.0)]
Probability = Annotated[StrictFloat, Field(gt=0.0, le=1.0)]
TopK = Annotated[StrictInt, Field(ge=-1, le=MAX_TOP_K), AfterValidator(lambda k: max(k, 0))]
"""0 and -1 (as vLLM-style clients say it) both turn top-k off."""
LogitBias = Annotated[dict[str, Annotated[StrictFloat, Field(ge=-100.0, le=100.0)]], Field(max_length=MAX_LOGIT_BIAS)]


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]


# field -> (test for the values that change nothing, why the rest are refused)
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "mirostat_lr": (lambda v: v is None, "Mirostat sampling is not supported"),
    "mirostat_target": (lambda v: v is None, "Mirostat sampling is not supported"),
    "reasoning_history": (lambda v: v is None, "reasoning controls are not supported"),
    "prompt_cache_max_len": (lambda v: v is None, "prompt_cache_max_len is not supported"),
    "images": (lambda v: v is None or v == [], "image input is not supported"),
    "tools": (lambda v: v is None or v == [], "tool calling is not supported"),
    "functions": (lambda v: v is None or v == [], "function calling is not supported"),
    "tool_choice": (lambda v: v in (None, "none", "auto"), "tool calling is not supported"),
    "function_call": (lambda v: v in (None, "none", "auto"), "function calling is not supported"),
    "parallel_tool_calls": (lambda v: v is None, "tool calling is not supported"),
    "safe_tokenization": (lambda v: v in (None, False), "safe_tokenization is not supported"),
}


def reject_unsupported(value: Any, info: ValidationInfo) -> Any:
    is_neutral, why = _UNSUPPORTED[info.field_name]
    if not is_neutral(value):
        raise ValueError(f"'{info.field_name}' is not supported by firebox: {why}")
    return value


JsonSchemaDocument = dict[str, Any] | str  # a JSON Schema, as an object or as JSON text (Fireworks)


class PredictionPart(RequestModel):
    type: Literal["text"]
    text: str


class PredictedOutput(RequestModel):
    """`prediction` (OpenAI's predicted outputs): text the answer is expected to mostly repeat."""

    type: Literal["content"]
    content: str | list[PredictionPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class JsonSchemaFormat(RequestModel):
    """`response_format.json_schema` (OpenAI): the schema the output must validate against.
    `strict` is accepted either way: firebox always enforces the schema by constrained decoding."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(max_length=64)] | None = None
    description: str | None = None
    schema_: JsonSchemaDocument | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestModel):
    """`response_format`: free text, any JSON object (optionally with a `schema`, as Fireworks
    allows), a JSON schema, or a GBNF grammar (Fireworks' grammar mode)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema", "grammar"]
    json_schema: JsonSchemaFormat | None = None
    schema_: JsonSchemaDocument | None = Field(default=None, alias="schema")
    grammar: str | None = None


class ThinkingConfig(RequestModel):
    """`thinking` (Fireworks, as Anthropic spells it): thinking on or off; a budget is refused."""

    type: Literal["enabled", "disabled"]
    budget_tokens: Annotated[StrictInt, Field(ge=1)] | None = None


class GenerationParams(RequestModel):
    """Fields of `chat.completions.create` and `completions.create` alike."""

    model: str
    context_length_exceeded_behavior: ContextLengthBehavior | None = None
    echo: Flag | None = None
    echo_last: Count | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    repetition_penalty: Annotated[StrictFloat, Field(gt=0.0, le=2.0)] | None = None
    ignore_eos: Flag | None = None
    logit_bias: LogitBias | None = None
    logprobs: Flag | Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    metadata: Metadata | None = None
    min_p: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] | None = None
    top_p: Probability | None = None
    typical_p: Probability | None = None
    top_k: TopK | None = None
    temperature: Annotated[StrictFloat, Field(ge=0.0, le=2.0)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
    perf_metrics_in_response: Flag | None = None
    prompt_cache_isolation_key: Identifier | None = None
    prompt_cache_key: Identifier | None = None
    raw_output: Flag | None = None
    return_token_ids: Flag | None = None
    seed: Seed | None = None
    service_tier: ServiceTier | None = None
    stop: StopString | list[StopString] | None = None
    stream: Flag | None = None
    stream_options: StreamOptions | None = None
    user: Identifier | None = None
    response_format: ResponseFormat | None = None
    prediction: PredictedOutput | str | None = None  # the expected output: drafts verified several per step
    speculation: str | list[Annotated[int, Field(ge=0)]] | None = None  # Fireworks' raw form: text or token ids

    # declared so that they are known; only their neutral values pass (see `_UNSUPPORTED`)
    mirostat_lr: float | None = None
    mirostat_target: float | None = None
    reasoning_history: str | None = None
    prompt_cache_max_len: int | None = None

    # whether the model thinks out loud: checked against its chat template (`serving/reasoning.py`)
    reasoning_effort: Flag | Annotated[StrictInt, Field(ge=0)] | ReasoningEffort | None = None
    thinking: ThinkingConfig | None = None

    _check_unsupported = field_validator(
        "mirostat_lr",
        "mirostat_target",
        "reasoning_history",
        "prompt_cache_max_len",
    )(reject_unsupported)

    @field_validator("stop")
    @classmethod
    def _stop_strings_few_and_not_empty(cls, value: str | list[str] | None) -> str | list[str] | None:
        strings = [value] if isinstance(value, str) else value or []
        if len(strings) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in strings):
            raise ValueError("stop strings must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_keys_are_token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.strip().isdecimal():  # what int() reads; isdigit() also passes "²"
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value
