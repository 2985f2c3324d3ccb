"""A streamed response as OpenAI's typed events, and its stored copy kept in step.

Order: response.created, response.in_progress, then each output item in turn, then
response.completed or response.incomplete; an engine failure ends the stream with response.failed.
A reasoning item (a thinking model's thoughts) first: response.output_item.added,
response.reasoning_text.delta, then .done and response.output_item.done when the answer begins.
A message item: response.output_item.added and response.content_part.added at its first text,
response.output_text.delta (one per engine delta with text), then response.output_text.done,
response.content_part.done and response.output_item.done when a call follows it or the output
ends. A function call, once it has parsed: response.output_item.added (arguments ""),
response.function_call_arguments.delta (all of them) and .done, response.output_item.done.
The stored response is written `in_progress` before the client learns its id, and its end is
queued before the run is closed, so a client that goes away leaves it `cancelled`, never
`in_progress` or `completed`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from firebox.engine.types import RequestOutput
from firebox.protocol.response_events import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    DeltaLogprob,
    LifecycleEvent,
    OutputItemEvent,
    ReasoningDeltaEvent,
    ReasoningDoneEvent,
    ResponseEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from firebox.protocol.responses import OutputItem, OutputMessage, ResponseObject
from firebox.serving.responses.body import ResponseBuilder, delta_logprobs
from firebox.serving.responses.store import ResponseStore, completed_future
from firebox.serving.generation.run import GenerationRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A response being generated, and where it is kept (`store` None: `store: false`)."""

    builder: ResponseBuilder
    store: ResponseStore | None
    account_id: str
    input_items: list[dict[str, Any]]

    @property
    def run(self) -> GenerationRun:
        return self.builder.run

    def save(self, body: ResponseObject) -> Awaitable[None]:
        """Queue the write now; await the result to know it is done."""
        if self.store is None:
            return completed_future()
        return self.store.save(self.account_id, body.model_dump(mode="json"), self.input_items)


def response_events(stored: StoredRun) -> AsyncIterator[ResponseEvent]:
    """The stream's events; closing it before the first one still closes the run."""
    return _CloseGuard(_events(stored), stored.run)


async def _events(stored: StoredRun) -> AsyncIterator[ResponseEvent]:
    seq = itertools.count()
    builder, run = stored.builder, stored.run
    items = _ItemEvents(builder, seq)
    generation = _generation(stored, items, seq)
    try:
        async for event in generation:
            yield event
    except Exception as exc:  # the engine failed: the stream ends with response.failed
        logger.warning("response stream %s failed: %r", builder.frame.response_id, exc)
        failed = builder.body("failed", exc)
        saved = stored.save(failed)
        await run.close_after(exc, streaming=True)
        await saved
        yield LifecycleEvent(type="response.failed", sequence_number=next(seq), response=failed)
        return
    except BaseException as exc:  # the client went away: record the end, then abort
        stored.save(builder.body("cancelled"))
        await run.close_after(exc, streaming=True)
        raise
    finally:
        await generation.aclose()  # type: ignore[attr-defined]
    final = builder.body(builder.final_status())
    saved = stored.save(final)
    await run.close(200, aborted=False)
    await saved
    for event in items.closing(final):
        yield event
    kind = "response.completed" if final.status == "completed" else "response.incomplete"
    yield LifecycleEvent(type=kind, sequence_number=next(seq), response=final)


async def _generation(stored: StoredRun, items: _ItemEvents, seq: Iterator[int]) -> AsyncIterator[ResponseEvent]:
    """From response.created to the last delta."""
    builder = stored.builder
    opening = builder.body("in_progress")
    await stored.save(opening)
    yield LifecycleEvent(type="response.created", sequence_number=next(seq), response=opening)
    yield LifecycleEvent(type="response.in_progress", sequence_number=next(seq), response=opening)
    async for _, output in stored.run.events():
        for event in items.delta(output):
            yield event
    if not builder.items:  # nothing said, nothing called: one empty message
        for event in items.text(""):
            yield event


class _ItemEvents:
    """The output items' events, as the builder takes each engine delta; one message is open at
    a time, from its first text until a call follows it or the response ends."""

    def __init__(self, builder: ResponseBuilder, seq: Iterator[int]) -> None:
        self._builder = builder
        self._seq = seq
        self._open: int | None = None  # the output index of the message taking text
        self._open_reasoning: int | None = None  # the output index of the reasoning item taking thinking

    def delta(self, output: RequestOutput) -> Iterator[ResponseEvent]:
        parsed = self._builder.parse(output)
        logprobs = self._builder.delta_logprobs(output)
        if parsed.reasoning:
            yield from self._reasoning(parsed.reasoning)
        if parsed.content or logprobs or parsed.tool_calls:
            yield from self._close_reasoning()
        if parsed.content or logprobs:
            yield from self.text(parsed.content, logprobs)
        for call in parsed.tool_calls:
            if self._open is not None:
                yield from self._close_message(self._builder.message_item(self._open, "completed"))
            yield from self._call(self._builder.add_call(call))

    def text(self, text: str, logprobs: list[DeltaLogprob] | None = None) -> Iterator[ResponseEvent]:
        index, is_new = self._builder.add_text(text)
        item = self._builder.opened_item(index)
        at = {"item_id": item.id, "output_index": index}
        if is_new:
            self._open = index
            yield self._item_event("response.output_item.added", index, item)
            part = self._builder.text_part("", with_logprobs=False)
            yield ContentPartEvent(type="response.content_part.added", sequence_number=next(self._seq), **at, part=part)
        if text or logprobs:
            yield TextDeltaEvent(sequence_number=next(self._seq), **at, delta=text, logprobs=logprobs or [])

    def _reasoning(self, text: str) -> Iterator[ResponseEvent]:
        index, is_new = self._builder.add_reasoning(text)
        item = self._builder.opened_item(index)
        if is_new:
            self._open_reasoning = index
            yield self._item_event("response.output_item.added", index, item)
        yield ReasoningDeltaEvent(sequence_number=next(self._seq), item_id=item.id, output_index=index, delta=text)

    def _close_reasoning(self, status: str = "completed") -> Iterator[ResponseEvent]:
        """The thinking is over (the answer began, or the output ended)."""
        if self._open_reasoning is None:
            return
        index, self._open_reasoning = self._open_reasoning, None
        item = self._builder.reasoning_item(index, status)
        at = {"item_id": item.id, "output_index": index}
        yield ReasoningDoneEvent(sequence_number=next(self._seq), **at, text=item.content[0].text)
        yield self._item_event("response.output_item.done", index, item)

    def _call(self, index: int) -> Iterator[ResponseEvent]:
        item = self._builder.call_item(index)
        at = {"item_id": item.id, "output_index": index}
        yield self._item_event("response.output_item.added", index, self._builder.opened_item(index))
        yield ArgumentsDeltaEvent(sequence_number=next(self._seq), **at, delta=item.arguments)
        yield ArgumentsDoneEvent(sequence_number=next(self._seq), **at, arguments=item.arguments)
        yield self._item_event("response.output_item.done", index, item)

    def closing(self, final: ResponseObject) -> Iterator[ResponseEvent]:
        """The open item's end, as the final body has it."""
        yield from self._close_reasoning(final.status)
        if self._open is not None:
            yield from self._close_message(self._builder.message_item(self._open, final.status))

    def _close_message(self, item: OutputMessage) -> Iterator[ResponseEvent]:
        index, part = self._open, item.content[0]
        self._open = None
        at = {"item_id": item.id, "output_index": index}
        logprobs = delta_logprobs(part.logprobs)
        yield TextDoneEvent(sequence_number=next(self._seq), **at, text=part.text, logprobs=logprobs)
        yield ContentPartEvent(type="response.content_part.done", sequence_number=next(self._seq), **at, part=part)
        yield self._item_event("response.output_item.done", index, item)

    def _item_event(self, kind: str, index: int, item: OutputItem) -> OutputItemEvent:
        return OutputItemEvent(type=kind, sequence_number=next(self._seq), output_index=index, item=item)


class _CloseGuard:
    """Closing an async generator that never started runs none of its clean-up; this closes the
    run in that case (nothing was stored yet)."""

    def __init__(self, events: AsyncIterator[ResponseEvent], run: GenerationRun) -> None:
        self._events = events
        self._run = run
        self._started = False

    def __aiter__(self) -> _CloseGuard:
        return self

    async def __anext__(self) -> ResponseEvent:
        self._started = True
        return await anext(self._events)

    async def aclose(self) -> None:
        if not self._started:
            await self._run.close(200, aborted=True)
        await self._events.aclose()  # type: ignore[attr-defined]
