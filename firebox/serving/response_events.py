"""A streamed response as OpenAI's typed events, and its stored copy kept in step.

Order: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta (one per engine delta with text),
response.output_text.done, response.content_part.done, response.output_item.done, then
response.completed or response.incomplete; an engine failure ends the stream with response.failed.
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

from firebox.protocol.response_events import (
    ContentPartEvent,
    LifecycleEvent,
    OutputItemEvent,
    ResponseEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from firebox.protocol.responses import ResponseObject
from firebox.serving.response_body import ResponseBuilder, delta_logprobs
from firebox.serving.response_store_interface import ResponseStore, completed_future
from firebox.serving.run import GenerationRun

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
    generation = _generation(stored, seq)
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
    for event in _closing(builder, final, seq):
        yield event


async def _generation(stored: StoredRun, seq: Iterator[int]) -> AsyncIterator[ResponseEvent]:
    """From response.created to the last text delta."""
    builder = stored.builder
    opening = builder.body("in_progress")
    await stored.save(opening)
    yield LifecycleEvent(type="response.created", sequence_number=next(seq), response=opening)
    yield LifecycleEvent(type="response.in_progress", sequence_number=next(seq), response=opening)
    item = builder.message("in_progress", with_content=False)
    yield OutputItemEvent(type="response.output_item.added", sequence_number=next(seq), item=item)
    part = builder.text_part(with_text=False)
    yield ContentPartEvent(type="response.content_part.added", sequence_number=next(seq), item_id=item.id, part=part)
    async for _, output in stored.run.events():
        logprobs = builder.delta_logprobs(output)
        if output.text_delta or logprobs:
            yield TextDeltaEvent(sequence_number=next(seq), item_id=item.id, delta=output.text_delta, logprobs=logprobs)


def _closing(builder: ResponseBuilder, final: ResponseObject, seq: Iterator[int]) -> Iterator[ResponseEvent]:
    """From response.output_text.done to response.completed (or .incomplete)."""
    item = final.output[0]
    part = item.content[0]
    yield TextDoneEvent(
        sequence_number=next(seq), item_id=item.id, text=part.text, logprobs=delta_logprobs(part.logprobs)
    )
    yield ContentPartEvent(type="response.content_part.done", sequence_number=next(seq), item_id=item.id, part=part)
    yield OutputItemEvent(type="response.output_item.done", sequence_number=next(seq), item=item)
    kind = "response.completed" if final.status == "completed" else "response.incomplete"
    yield LifecycleEvent(type=kind, sequence_number=next(seq), response=final)


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
