"""`AsyncEngine`: the `EngineClient` the serving layer talks to.

The engine core steps on a dedicated thread, so the event loop never runs a step and a step never
waits on the event loop. The boundary is narrow on purpose, so that the core can move into its own
process behind the same class: commands (add, abort) go into one queue that the engine thread
drains at the start of each step; outputs come back one `RequestOutput` at a time through
`loop.call_soon_threadsafe` into a per-request `asyncio.Queue`. An idle engine thread sleeps on a
condition variable; it never spins.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from firebox.engine.core import EngineCore
from firebox.engine.stats import EngineStats
from firebox.engine.types import EngineDeadError, EngineError, EngineRequest, ModelInfo, RequestOutput
from firebox.loader.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException] = field(default_factory=asyncio.Queue)

    def put(self, item: RequestOutput | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            pass


@dataclass(frozen=True, slots=True)
class _Add:
    request: EngineRequest
    stream: _Stream


@dataclass(frozen=True, slots=True)
class _Abort:
    request_id: str


class AsyncEngine:
    """An `EngineClient` over an `EngineCore` stepped on its own thread."""

    def __init__(self, core: EngineCore, model_info: ModelInfo, tokenizer: Tokenizer) -> None:
        self.core = core
        self.model_info = model_info
        self.tokenizer = tokenizer
        self._cond = threading.Condition()
        self._commands: list[_Add | _Abort] = []  # guarded by _cond
        self._stopping = False  # guarded by _cond
        self._dead_reason: str | None = None  # guarded by _cond; set once, never cleared
        self._streams: dict[str, _Stream] = {}  # engine thread only
        self._stats = core.stats()
        self._thread = threading.Thread(target=self._run, name="firebox-engine-core", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> EngineStats:
        """The snapshot taken after the engine thread's last step."""
        return self._stats

    @property
    def is_alive(self) -> bool:
        return self._dead_reason is None

    # --- event-loop side ------------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        """Submit a request and iterate its deltas. Raises QueueFullError, PromptTooLongError or
        ValueError before the first delta, EngineDeadError if the engine stops. Leaving the loop
        early (break, aclose, cancellation) aborts the request in the core."""
        stream = _Stream(asyncio.get_running_loop())
        self._send(_Add(request, stream))
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
                self._send_abort(request.request_id)

    async def abort(self, request_id: str) -> None:
        """Stop a request; its stream ends with an ABORT delta and its blocks are freed."""
        self._send_abort(request_id)

    def shutdown(self, timeout: float | None = None) -> None:
        """Abort every request, stop the engine thread and wait for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _send(self, command: _Add | _Abort) -> None:
        with self._cond:
            if self._dead_reason is not None:
                raise EngineDeadError(self._dead_reason)
            self._commands.append(command)
            self._cond.notify()

    def _send_abort(self, request_id: str) -> None:
        try:
            self._send(_Abort(request_id))
        except EngineDeadError:
            pass  # nothing left to abort

    # --- engine thread --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (commands := self._wait_for_work()) is not None:
                self._apply(commands)
                if self.core.has_unfinished():
                    self._deliver(self.core.step())
                self._stats = self.core.stats()
            self._deliver(self.core.abort_all())
            self._stop("the engine is shut down")
        except Exception as exc:
            logger.exception("engine core failed; failing every request")
            self._stop(f"the engine failed: {exc!r}")

    def _wait_for_work(self) -> list[_Add | _Abort] | None:
        """The commands to apply before the next step; None once shutdown is asked for."""
        with self._cond:
            while not (self._commands or self._stopping or self.core.has_unfinished()):
                self._cond.wait()
            if self._stopping:
                return None
            commands, self._commands = self._commands, []
            return commands

    def _apply(self, commands: list[_Add | _Abort]) -> None:
        for command in commands:
            if isinstance(command, _Abort):
                self._deliver(self.core.abort([command.request_id]))
                continue
            try:
                self.core.add_request(command.request)
            except (EngineError, ValueError) as exc:
                command.stream.put(exc)
            else:
                self._streams[command.request.request_id] = command.stream

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for output in outputs:
            stream = (self._streams.pop if output.finished else self._streams.get)(output.request_id, None)
            if stream is not None:
                stream.put(output)

    def _stop(self, reason: str) -> None:
        """Refuse new requests and end every stream still open with EngineDeadError."""
        with self._cond:
            self._dead_reason = reason
            pending, self._commands = self._commands, []
        streams = [*self._streams.values(), *(c.stream for c in pending if isinstance(c, _Add))]
        self._streams.clear()
        for stream in streams:
            stream.put(EngineDeadError(reason))
