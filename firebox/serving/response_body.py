"""The `response` object of a running generation, at any status.

`ResponseFrame` holds what does not change while the response runs (ids, time, the settings it
echoes); `ResponseBuilder` adds the run's text, usage and status: `in_progress` while streaming,
then `completed`, `incomplete` (the output hit max_output_tokens or the context), `cancelled`
(the client went away) or `failed` (the engine failed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from firebox.engine.types import RequestOutput
from firebox.protocol.common import NewLogProbs, UsageInfo
from firebox.protocol.response_events import DeltaLogprob, DeltaTopLogprob
from firebox.protocol.responses import (
    IncompleteDetails,
    InputTokensDetails,
    OutputLogprob,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ResponseCreateRequest,
    ResponseError,
    ResponseObject,
    ResponseUsage,
    TopLogprob,
)
from firebox.serving.errors import error_response
from firebox.serving.output import ChoiceRenderer
from firebox.serving.run import GenerationRun

_ITEM_STATUS = {"in_progress": "in_progress", "completed": "completed"}  # anything else: incomplete


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    response_id: str
    message_id: str
    created_at: int
    settings: dict[str, Any]  # the ResponseObject fields that echo the request


def echoed_settings(req: ResponseCreateRequest, model: str, sampling_options: dict[str, Any]) -> dict[str, Any]:
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
        "service_tier": "priority" if req.service_tier == "priority" else "default",
        "store": req.wants_store,
        "temperature": sampling_options["temperature"],
        "top_p": sampling_options["top_p"],
        "text": echoed_text(req),
        "tool_choice": req.tool_choice or "auto",
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
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached or 0),
        output_tokens=completion,
        output_tokens_details=OutputTokensDetails(),
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


class ResponseBuilder:
    def __init__(self, frame: ResponseFrame, run: GenerationRun, renderer: ChoiceRenderer, perf: bool) -> None:
        self.frame = frame
        self.run = run
        self._renderer = renderer
        self._perf = perf

    @property
    def text(self) -> str:
        return self._renderer.text

    def final_status(self) -> str:
        """completed, or incomplete when the output was cut by its token limit."""
        return "incomplete" if self._renderer.choice.finish_reason == "length" else "completed"

    def text_part(self, with_text: bool = True) -> OutputText:
        if not with_text:
            return OutputText(text="")
        return OutputText(text=self.text, logprobs=output_logprobs(self._renderer.logprobs()))

    def message(self, status: str, with_content: bool = True) -> OutputMessage:
        content = [self.text_part()] if with_content else []
        return OutputMessage(id=self.frame.message_id, status=_ITEM_STATUS.get(status, "incomplete"), content=content)

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
            output=[self.message(status)] if ended else [],
            usage=response_usage(self.run.usage()) if ended else None,
            perf_metrics=self.run.perf_metrics() if ended and self._perf else None,
            **frame.settings,
        )


def _error(exc: BaseException) -> ResponseError:
    detail = error_response(exc).error  # the client-safe message
    return ResponseError(code="server_error", message=detail.message)
