"""`AsyncEngine`: the `EngineClient` the serving layer talks to, whichever side of a transport the
engine core runs on (transport/: a thread of this process, or a process of its own).

The event loop never runs a step and never waits on the core: `generate()` registers a
per-request `asyncio.Queue` and hands the request to the transport, whose `submit` never blocks on
the core. Each engine step comes back as one `Step` on the transport's thread; `deliver` hands
every event loop its share of it with one `loop.call_soon_threadsafe`. When the core dies, every
open stream ends with `EngineDeadError` and new requests are refused. A stream whose reader falls
`max_pending_deltas` behind (a client that stops reading its SSE stream) is cut rather than
buffered without bound: the request is aborted and the reader gets `SlowReaderError` after the
deltas already queued.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from firebox.engine.ipc import Step
from firebox.engine.stats import EngineStats
from firebox.engine.transport.base import EngineTransport
from firebox.engine.types import EngineDeadError, EngineRequest, ModelInfo, RequestOutput, SlowReaderError
from firebox.loader.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_Item = RequestOutput | BaseException
MAX_PENDING_DELTAS = 1024  # unread deltas a stream may hold (a few hundred KB at most) before it is cut


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    max_pending: int
    cut: Callable[[], None]  # forget the stream and abort its request
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    is_cut: bool = False

    def put(self, item: _Item) -> None:
        """On the stream's loop. A delta that finds `max_pending` unread ones cuts the stream: the
        reader gets SlowReaderError after them, and the request is aborted."""
        if self.is_cut:
            return
        is_last = isinstance(item, BaseException) or item.finished
        if not is_last and self.queue.qsize() >= self.max_pending:
            self.is_cut = True
            self.queue.put_nowait(SlowReaderError(
                f"the stream was cut: its reader fell {self.max_pending} deltas behind (a client must keep "
                "reading its stream); the request was aborted"
            ))  # fmt: skip
            self.cut()
            return
        self.queue.put_nowait(item)


_Posts = dict[asyncio.AbstractEventLoop, list[tuple[_Stream, _Item]]]


class AsyncEngine:
    """An `EngineClient` over an `EngineTransport`; built by `launch.start_engine` (thread) or
    `process.launch_process_engine` (process)."""

    def __init__(
        self,
        transport: EngineTransport,
        model_info: ModelInfo,
        tokenizer: Tokenizer,
        stats: EngineStats,
        max_pending_deltas: int = MAX_PENDING_DELTAS,
    ) -> None:
        self.transport = transport
        self.max_pending_deltas = max_pending_deltas
        self.model_info = model_info
        self.tokenizer = tokenizer
        self._stats = stats
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}  # guarded by _lock
        self._dead_reason: str | None = None  # guarded by _lock; set once, never cleared
        self._has_failed = False  # died of a failure, not a shutdown
        self._death_callbacks: list[Callable[[AsyncEngine], None]] = []  # guarded by _lock
        transport.start(self)

    @property
    def stats(self) -> EngineStats:
        """As of the core's last step."""
        return self._stats

    @property
    def is_alive(self) -> bool:
        return self._dead_reason is None

    @property
    def num_outstanding(self) -> int:
        """Requests submitted and not yet finished."""
        return len(self._streams)

    # --- event-loop side ------------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        """Submit a request and iterate its deltas. Raises QueueFullError, PromptTooLongError or
        ValueError before the first delta, EngineDeadError if the engine stops. Leaving the loop
        early (break, aclose, cancellation) aborts the request in the core."""
        cut = functools.partial(self._forget, request.request_id)
        stream = _Stream(asyncio.get_running_loop(), self.max_pending_deltas, cut)
        self._register(request.request_id, stream)
        self.transport.submit(request)
        done = False
        try:
            while not done:
                item = await stream.queue.get()
                done = isinstance(item, BaseException) or item.finished
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not done:
                self._forget(request.request_id)

    async def abort(self, request_id: str) -> None:
        """Stop a request; its stream ends with an ABORT delta and its blocks are freed."""
        if self.is_alive:
            self.transport.abort(request_id)

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Abort every request, stop the core and wait up to `timeout` seconds for it."""
        self.transport.shutdown(timeout)

    def _register(self, request_id: str, stream: _Stream) -> None:
        with self._lock:
            if self._dead_reason is not None:
                raise EngineDeadError(self._dead_reason)
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already running")
            self._streams[request_id] = stream

    def _forget(self, request_id: str) -> None:
        """The consumer left before the end: drop its stream and abort the request in the core."""
        with self._lock:
            was_open = self._streams.pop(request_id, None) is not None
        if was_open and self.is_alive:
            self.transport.abort(request_id)

    # --- StepSink: called on the transport's thread ---------------------------------------------

    def deliver(self, step: Step) -> None:
        """Route a step's outputs and refusals to their streams; finished streams close."""
        self._stats = step.stats
        posts: _Posts = {}
        with self._lock:
            for refused in step.rejections:
                if (stream := self._streams.pop(refused.request_id, None)) is not None:
                    posts.setdefault(stream.loop, []).append((stream, refused.error()))
            for output in step.outputs:
                take = self._streams.pop if output.finished else self._streams.get
                if (stream := take(output.request_id, None)) is not None:
                    posts.setdefault(stream.loop, []).append((stream, output))
        _post(posts)

    def die(self, reason: str, *, is_failure: bool) -> None:
        """Refuse new requests and end every open stream with EngineDeadError. `reason` (exit
        code, the child's last words) goes to the log; clients get `public_reason`, which names
        no process and holds no traceback."""
        public_reason = f"the engine of model {self.model_info.name} stopped" if is_failure else reason
        with self._lock:
            if self._dead_reason is None:
                self._dead_reason, self._has_failed = public_reason, is_failure
            streams, self._streams = list(self._streams.values()), {}
            callbacks, self._death_callbacks = self._death_callbacks, []
        if is_failure:
            logger.error("model %s: %s; failing %d in-flight requests", self.model_info.name, reason, len(streams))
        posts: _Posts = {}
        for stream in streams:
            posts.setdefault(stream.loop, []).append((stream, EngineDeadError(public_reason)))
        _post(posts)
        for callback in callbacks if is_failure else []:
            callback(self)

    def on_failure(self, callback: Callable[[AsyncEngine], None]) -> None:
        """Call `callback(self)` once the engine fails (not when it is shut down), on the
        transport's thread; at once if it has failed already."""
        with self._lock:
            if self._dead_reason is None:
                self._death_callbacks.append(callback)
                return
        if self._has_failed:
            callback(self)


def _post(posts: _Posts) -> None:
    """One `call_soon_threadsafe` per event loop, however many streams it has in the step."""
    for loop, items in posts.items():
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # that loop is closed: nobody is listening
            pass


def _put_all(items: list[tuple[_Stream, _Item]]) -> None:
    for stream, item in items:
        stream.put(item)
