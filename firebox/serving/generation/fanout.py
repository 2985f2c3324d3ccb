"""Several engine requests of one API request (n > 1, several prompts) as one merged stream.

Each engine stream is pumped by its own task into one queue, so the merged stream yields
deltas in the order the engine produces them, tagged with the choice index. The queue is
bounded: a slow reader stops the pumps, so the deltas wait in the engine streams, which cut a
reader that falls too far behind. Closing the merged stream (or cancelling its consumer) closes
every engine stream, which aborts its request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from firebox.engine.types import EngineClient, EngineRequest, RequestOutput

_DONE = object()
MAX_MERGED_PENDING = 16  # deltas per choice waiting in the merged queue; beyond, the pumps wait


async def aclose_quietly(stream: Any) -> None:
    """Close an async iterator if it can be closed (closing a finished one is a no-op)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def merge_streams(
    engine: EngineClient, requests: Sequence[EngineRequest]
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(choice index, delta) pairs of all `requests`; the first engine error is raised."""
    if len(requests) == 1:
        async for pair in _single_stream(engine, requests[0]):
            yield pair
        return
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(MAX_MERGED_PENDING * len(requests))
    tasks = [asyncio.create_task(_pump(engine, i, req, queue)) for i, req in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _single_stream(engine: EngineClient, request: EngineRequest) -> AsyncIterator[tuple[int, RequestOutput]]:
    stream = engine.generate(request)
    try:
        async for output in stream:
            yield 0, output
    finally:
        await aclose_quietly(stream)


async def _pump(engine: EngineClient, index: int, request: EngineRequest, queue: asyncio.Queue) -> None:
    stream = None
    try:
        stream = engine.generate(request)
        async for output in stream:
            await queue.put((index, output))
        await queue.put((index, _DONE))
    except Exception as exc:  # handed to the consumer, which raises it
        await queue.put((index, exc))
    finally:
        await aclose_quietly(stream)
