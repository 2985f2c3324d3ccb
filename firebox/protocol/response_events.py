"""Responses API stream events, as the `openai` SDK types them (`types/responses/*_event.py`).

Each is sent as `event: <type>` plus `data: <json>`; `sequence_number` counts from 0 per stream.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from firebox.protocol.common import ResponseModel
from firebox.protocol.responses import OutputItem, OutputText, ResponseObject


class ResponseEvent(ResponseModel):
    type: str
    sequence_number: int


class LifecycleEvent(ResponseEvent):
    """response.created / in_progress / completed / incomplete / failed."""

    type: Literal[
        "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed"
    ]
    response: ResponseObject


class OutputItemEvent(ResponseEvent):
    """response.output_item.added / done."""

    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class _ItemEvent(ResponseEvent):
    """An event about one output item's contents."""

    item_id: str
    output_index: int


class ContentPartEvent(_ItemEvent):
    """response.content_part.added / done."""

    type: Literal["response.content_part.added", "response.content_part.done"]
    content_index: int = 0
    part: OutputText


class DeltaTopLogprob(ResponseModel):
    token: str
    logprob: float


class DeltaLogprob(ResponseModel):
    token: str
    logprob: float
    top_logprobs: list[DeltaTopLogprob] = Field(default_factory=list)


class _TextEvent(_ItemEvent):
    content_index: int = 0
    logprobs: list[DeltaLogprob] = Field(default_factory=list)


class TextDeltaEvent(_TextEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class TextDoneEvent(_TextEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class ArgumentsDeltaEvent(_ItemEvent):
    """A call's arguments arrive whole, in one delta: a call is sent once it has parsed."""

    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    delta: str


class ArgumentsDoneEvent(_ItemEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    arguments: str


class ReasoningDeltaEvent(_ItemEvent):
    type: Literal["response.reasoning_text.delta"] = "response.reasoning_text.delta"
    content_index: int = 0
    delta: str


class ReasoningDoneEvent(_ItemEvent):
    type: Literal["response.reasoning_text.done"] = "response.reasoning_text.done"
    content_index: int = 0
    text: str
