"""The `response` object of a running generation, at any status.

`ResponseFrame` holds what does not change while the response runs (ids, time, the settings it
echoes); `ResponseBuilder` adds the run's output items, usage and status: `in_progress` while
streaming, then `completed`, `incomplete` (the output hit max_output_tokens or the context),
`cancelled` (the client went away) or `failed` (the engine failed).

The output items come in the order the model wrote them: text is a message item (a new one if text
follows a call), each function call an item of its own. A response that ends with neither has one
empty message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from firebox.engine.types import RequestOutput
from firebox.protocol.common import NewLogProbs, UsageInfo
from firebox.protocol.response_events import DeltaLogprob, DeltaTopLogprob
from firebox.protocol.responses import (
    IncompleteDetails,
    InputTokensDetails,
    OutputFunctionCall,
    OutputItem,
    OutputLogprob,
    OutputMessage,
    OutputReasoning,
    OutputText,
    OutputTokensDetails,
    ReasoningText,
    ResponseCreateRequest,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    TopLogprob,
)
from firebox.serving.errors import error_response
from firebox.serving.generation.output import ChoiceRenderer
from firebox.serving.output_parsing import ParsedDelta, ToolCallDelta
from firebox.serving.responses.items import new_item_id
from firebox.serving.responses.request import echoed_tool_choice, echoed_tools
from firebox.serving.generation.run import GenerationRun
from firebox.serving.tools.calling import ToolCall

_ITEM_STATUS = {"in_progress": "in_progress", "completed": "completed"}  # anything else: incomplete


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    response_id: str
    message_id: str  # the first message item's
    created_at: int
    settings: dict[str, Any]  # the ResponseObject fields that echo the request


def echoed_settings(
    req: ResponseCreateRequest, model: str, sampling_options: dict[str, Any], is_priority: bool = False
) -> dict[str, Any]:
    """The request's settings as the response reports them; temperature and top_p as used."""
    return {
        "model": model,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "metadata": req.metadata or {},
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "prompt_cache_key": req.prompt_cache_key,
        "safety_identifier": req.safety_identifier,
        "service_tier": "priority" if is_priority else "default",  # the tier it was served at
        "store": req.wants_store,
        "temperature": sampling_options["temperature"],
        "top_p": sampling_options["top_p"],
        "reasoning": {"effort": req.reasoning.effort if req.reasoning is not None else None, "summary": None},
        "text": echoed_text(req),
        "tool_choice": echoed_tool_choice(req),
        "tools": echoed_tools(req),
        "top_logprobs": req.top_logprobs,
        "truncation": req.truncation or "disabled",
        "user": req.user,
    }


def echoed_text(req: ResponseCreateRequest) -> dict[str, Any]:
    """`text` as OpenAI reports it: the format asked for (schema included), verbosity medium."""
    fmt = req.text.format if req.text is not None and req.text.format is not None else None
    echoed = {"type": "text"} if fmt is None else fmt.model_dump(by_alias=True, exclude_none=True)
    return {"format": echoed, "verbosity": "medium"}


def response_usage(usage: UsageInfo) -> ResponseUsage:
    completion = usage.completion_tokens or 0
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else 0
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached or 0),
        output_tokens=completion,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
        total_tokens=usage.total_tokens,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=completion,
    )


def output_logprobs(logprobs: NewLogProbs | Any) -> list[OutputLogprob]:
    entries = logprobs.content if isinstance(logprobs, NewLogProbs) and logprobs.content else []
    return [
        OutputLogprob(
            token=e.token,
            bytes=e.bytes,
            logprob=e.logprob,
            top_logprobs=[TopLogprob(token=t.token, bytes=t.bytes or [], logprob=t.logprob) for t in e.top_logprobs],
        )
        for e in entries
    ]


def delta_logprobs(logprobs: list[OutputLogprob]) -> list[DeltaLogprob]:
    """The stream events' form: no bytes."""
    return [
        DeltaLogprob(
            token=lp.token,
            logprob=lp.logprob,
            top_logprobs=[DeltaTopLogprob(token=t.token, logprob=t.logprob) for t in lp.top_logprobs],
        )
        for lp in logprobs
    ]


@dataclass(slots=True)
class _Message:
    id: str
    text: str = ""


@dataclass(slots=True)
class _Reasoning:
    id: str
    text: str = ""


def call_item_id(call: ToolCall) -> str:
    """The function_call item's id, derived from its call_id (streamed and stored bodies agree)."""
    return f"fc_{call.id.removeprefix('call_')}"


class ResponseBuilder:
    def __init__(
        self, frame: ResponseFrame, run: GenerationRun, renderer: ChoiceRenderer, perf: bool, max_calls: int | None
    ) -> None:
        self.frame = frame
        self.run = run
        self._renderer = renderer
        self._perf = perf
        self._max_calls = max_calls
        self.items: list[_Reasoning | _Message | ToolCall] = []

    def final_status(self) -> str:
        """completed, or incomplete when the output was cut by its token limit."""
        return "incomplete" if self._renderer.choice.finish_reason == "length" else "completed"

    # --- adding output --------------------------------------------------------------------------

    def parse(self, output: RequestOutput) -> ParsedDelta:
        """One engine delta split into text and calls; the calls past max_tool_calls left out."""
        parsed = self._renderer.parse_delta(output)
        parsed.tool_calls = self._kept(parsed.tool_calls)
        return parsed

    def add_whole(self) -> None:
        """The whole output, once the run has ended (not streamed)."""
        parsed = self._renderer.parsed()
        calls = self._kept(parsed.tool_calls)
        if parsed.reasoning:
            self.add_reasoning(parsed.reasoning)
        if parsed.content or not calls:
            self.add_text(parsed.content)
        for call in calls:
            self.add_call(call)

    def add_text(self, text: str) -> tuple[int, bool]:
        """Text onto the last message item, or a new one; (its output index, whether it is new)."""
        if self.items and isinstance(self.items[-1], _Message):
            self.items[-1].text += text
            return len(self.items) - 1, False
        is_first = not any(isinstance(item, _Message) for item in self.items)
        self.items.append(_Message(self.frame.message_id if is_first else new_item_id(), text))
        return len(self.items) - 1, True

    def add_reasoning(self, text: str) -> tuple[int, bool]:
        """Thinking onto the reasoning item (it comes first), or a new one; (its index, whether new)."""
        if self.items and isinstance(self.items[-1], _Reasoning):
            self.items[-1].text += text
            return len(self.items) - 1, False
        self.items.append(_Reasoning(f"rs_{new_item_id().removeprefix('msg_')}", text))
        return len(self.items) - 1, True

    def add_call(self, call: ToolCallDelta) -> int:
        self.items.append(ToolCall(call.id, call.name, call.arguments))
        return len(self.items) - 1

    def _kept(self, calls: Sequence[ToolCallDelta]) -> list[ToolCallDelta]:
        if self._max_calls is None:
            return list(calls)
        made = sum(isinstance(item, ToolCall) for item in self.items)
        return list(calls[: max(self._max_calls - made, 0)])

    # --- items and body -------------------------------------------------------------------------

    def text_part(self, text: str, with_logprobs: bool = True) -> OutputText:
        """Logprobs are the whole output's: with them, tools cannot be called, so it is all text."""
        if not with_logprobs:
            return OutputText(text=text)
        return OutputText(text=text, logprobs=output_logprobs(self._renderer.logprobs()))

    def opened_item(self, index: int) -> OutputItem:
        """The item as `response.output_item.added` announces it: nothing in it yet."""
        item = self.items[index]
        if isinstance(item, ToolCall):
            return OutputFunctionCall(
                id=call_item_id(item), call_id=item.id, name=item.name, arguments="", status="in_progress"
            )
        if isinstance(item, _Reasoning):
            return OutputReasoning(id=item.id, status="in_progress", content=[])
        return OutputMessage(id=item.id, status="in_progress", content=[])

    def output_item(self, index: int, status: str) -> OutputItem:
        """The item in a body at `status`."""
        item = self.items[index]
        if isinstance(item, _Reasoning):
            return self.reasoning_item(index, status)
        return self.call_item(index) if isinstance(item, ToolCall) else self.message_item(index, status)

    def reasoning_item(self, index: int, status: str) -> OutputReasoning:
        """Complete once anything follows it; else it shares the response's status."""
        item = self.items[index]
        assert isinstance(item, _Reasoning)
        is_last = index == len(self.items) - 1
        item_status = _ITEM_STATUS.get(status, "incomplete") if is_last else "completed"
        return OutputReasoning(id=item.id, status=item_status, content=[ReasoningText(text=item.text)])

    def message_item(self, index: int, status: str) -> OutputMessage:
        """The last item shares the response's status; one that a call follows is complete."""
        item = self.items[index]
        assert isinstance(item, _Message)
        is_last = index == len(self.items) - 1
        item_status = _ITEM_STATUS.get(status, "incomplete") if is_last else "completed"
        return OutputMessage(id=item.id, status=item_status, content=[self.text_part(item.text)])

    def call_item(self, index: int) -> OutputFunctionCall:
        call = self.items[index]
        assert isinstance(call, ToolCall)
        return OutputFunctionCall(
            id=call_item_id(call), call_id=call.id, name=call.name, arguments=call.arguments, status="completed"
        )

    def delta_logprobs(self, output: RequestOutput) -> list[DeltaLogprob]:
        return delta_logprobs(output_logprobs(self._renderer.delta_logprobs(output)))

    def body(self, status: str, error: BaseException | None = None) -> ResponseObject:
        """The response at `status`; usage and output once generation has ended."""
        frame, ended = self.frame, status != "in_progress"
        return ResponseObject(
            id=frame.response_id,
            created_at=frame.created_at,
            status=status,
            completed_at=int(time.time()) if status == "completed" else None,
            error=_error(error) if error is not None else None,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
            output=[self.output_item(i, status) for i in range(len(self.items))] if ended else [],
            usage=response_usage(self.run.usage()) if ended else None,
            perf_metrics=self.run.perf_metrics() if ended and self._perf else None,
            **frame.settings,
        )


def _error(exc: BaseException) -> ResponseError:
    detail = error_response(exc).error  # the client-safe message
    return ResponseError(code="server_error", message=detail.message)
