"""SSE framing (`data: {json}\\n\\n` ... `data: [DONE]\\n\\n`) and client disconnects.

A client that goes away must abort its engine requests at once: the event-stream response closes
its chunk iterator however the response ends (the iterator's own clean-up aborts the engine
requests and records the usage), and `cancel_on_disconnect` does the same for the time before
a response exists (waiting in the queue, a non-streamed generation).

A client that reads slowly holds nothing here: each frame is sent before the next chunk is
asked for, and uvicorn's send waits while the connection's buffer is full. The deltas wait in
the engine client's per-request queue instead, which is bounded: a stream that falls
MAX_PENDING_DELTAS behind is cut with a `SLOW_READER` error event (engine/client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Send

from firebox.protocol.common import ErrorResponse, ResponseModel

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


async def sse_frames(chunks: AsyncIterator[ResponseModel]) -> AsyncIterator[bytes]:
    """Each chunk as one event; `[DONE]` last, unless an error event ended the stream."""
    try:
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
            if isinstance(chunk, ErrorResponse):
                return
        yield DONE
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[ResponseModel], headers: Mapping[str, str]) -> None:
        super().__init__(sse_frames(chunks), headers={**STREAM_HEADERS, **headers})

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            # a disconnect cancels the send loop; closing here (shielded) aborts the engine requests
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and raising ClientDisconnected) if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnected()
    finally:
        watcher.cancel()
        if not task.done():  # we were cancelled ourselves
            task.cancel()
