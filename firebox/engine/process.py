"""`ProcessEngine`: the `EngineClient` whose engine core runs in its own process.

Same contract as `AsyncEngine` (client.py), with a pipe where that one has a thread:
- requests and aborts go to the child through an outbox drained by a writer thread, so the event
  loop never blocks on a full pipe; what queued up meanwhile goes as one message;
- each engine step comes back as one message (every output of the step, plus the engine stats),
  read by one reader thread that hands each event loop its share with one `call_soon_threadsafe`;
- the tokenizer stays in this process, so serving never waits on the child to tokenize.
If the child dies the pipe closes at once: the reader fails every open stream with
`EngineDeadError` and the engine refuses new requests.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from firebox.config import EngineConfig
from firebox.engine.describe import ModelDescription, describe_model
from firebox.engine.ipc import Abort, Command, Failed, Loading, Ready, Shutdown, Step, receive, send
from firebox.engine.launch import Progress, build_core
from firebox.engine.process_worker import CoreBuilder, run_engine_process
from firebox.engine.stats import EngineStats
from firebox.engine.types import EngineDeadError, EngineRequest, RequestOutput
from firebox.loader.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 600.0
_EXIT_WAIT_S = 0.5  # for the exit code of a child whose pipe just closed


class EngineStartError(RuntimeError):
    """The engine process failed to load its model (the child's traceback is the message)."""


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException] = field(default_factory=asyncio.Queue)


def _put_all(items: list[tuple[asyncio.Queue, RequestOutput | BaseException]]) -> None:
    for target, item in items:
        target.put_nowait(item)


class ProcessEngine:
    """An `EngineClient` over an engine core stepped in a child process. Build with `start()`."""

    def __init__(self, process: BaseProcess, conn: Connection, ready: Ready, tokenizer: Tokenizer) -> None:
        self.model_info = ready.model_info
        self.tokenizer = tokenizer
        self.pid = ready.pid
        self._process = process
        self._conn = conn
        self._stats = ready.stats
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}  # guarded by _lock
        self._dead_reason: str | None = None  # guarded by _lock; set once
        self._is_stopping = False
        self._failure: str | None = None  # the child's last words, if it sent any
        self._outbox: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name=f"firebox-engine-reader-{self.pid}", daemon=True)
        self._writer = threading.Thread(target=self._write, name=f"firebox-engine-writer-{self.pid}", daemon=True)
        self._reader.start()
        self._writer.start()

    @classmethod
    def start(
        cls,
        config: EngineConfig,
        progress: Progress | None = None,
        *,
        description: ModelDescription | None = None,
        build: CoreBuilder = build_core,
        timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> ProcessEngine:
        """Spawn the engine process and wait until its model is loaded (blocking). Raises
        EngineStartError with the child's error if loading fails."""
        return cls.launch(config, build=build).wait(progress, description=description, timeout=timeout)

    @classmethod
    def launch(
        cls, config: EngineConfig, *, build: CoreBuilder = build_core, start_method: str = "spawn"
    ) -> PendingProcessEngine:
        """Start the engine process and return at once: the child loads its model while the
        caller does other work, then `wait()` gives the engine. "spawn" is safe anywhere; "fork"
        skips a fresh interpreter and its imports, and is only for a parent with no threads yet."""
        context = multiprocessing.get_context(start_method)
        conn, child_conn = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        process = context.Process(
            target=run_engine_process,
            args=(config, child_conn, build, level),
            name=f"firebox-engine {config.model.name}",
            daemon=True,
        )
        process.start()
        child_conn.close()  # ours closed, so the child's death reads as EOF here
        return PendingProcessEngine(config, process, conn)

    @property
    def stats(self) -> EngineStats:
        """As of the child's last message."""
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
        """As `AsyncEngine.generate`: errors before the first delta, EngineDeadError if the engine
        process dies, and leaving the loop early aborts the request in the child."""
        stream = _Stream(asyncio.get_running_loop())
        self._register(request.request_id, stream)
        self._outbox.put(request)
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
        """Stop a request; its stream ends with the child's ABORT delta."""
        if self.is_alive:
            self._outbox.put(Abort(request_id))

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Abort every request, let the child exit (killed after `timeout`), and wait for it."""
        self._is_stopping = True
        self._outbox.put(Shutdown())
        self._outbox.put(None)
        self._process.join(timeout)
        if self._process.is_alive():
            logger.warning("engine process %d did not stop in %ss; killing it", self.pid, timeout)
            _kill(self._process)
        self._reader.join(1.0)
        self._writer.join(1.0)
        self._conn.close()

    def _register(self, request_id: str, stream: _Stream) -> None:
        with self._lock:
            if self._dead_reason is not None:
                raise EngineDeadError(self._dead_reason)
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already running")
            self._streams[request_id] = stream

    def _forget(self, request_id: str) -> None:
        """The consumer left before the end: drop its stream and abort the request in the child."""
        with self._lock:
            was_open = self._streams.pop(request_id, None) is not None
        if was_open and self.is_alive:
            self._outbox.put(Abort(request_id))

    # --- reader and writer threads --------------------------------------------------------------

    def _write(self) -> None:
        while (command := self._outbox.get()) is not None:
            batch, is_last = [command], False
            while not is_last and not self._outbox.empty():
                queued = self._outbox.get()
                is_last = queued is None
                if queued is not None:
                    batch.append(queued)
            try:
                send(self._conn, batch)
            except (OSError, ValueError):
                return  # the pipe is gone; the reader reports why
            if is_last:
                return

    def _read(self) -> None:
        try:
            while True:
                message = receive(self._conn)
                if isinstance(message, Step):
                    self._deliver(message)
                elif isinstance(message, Failed):
                    self._failure = message.message
        except (EOFError, OSError):
            pass
        self._die(self._exit_reason())

    def _deliver(self, step: Step) -> None:
        self._stats = step.stats
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        with self._lock:
            for refused in step.rejections:
                if (stream := self._streams.pop(refused.request_id, None)) is not None:
                    by_loop.setdefault(stream.loop, []).append((stream.queue, refused.error()))
            for output in step.outputs:
                take = self._streams.pop if output.finished else self._streams.get
                if (stream := take(output.request_id, None)) is not None:
                    by_loop.setdefault(stream.loop, []).append((stream.queue, output))
        _post(by_loop)

    def _exit_reason(self) -> str:
        if self._is_stopping:
            return "the engine is shut down"
        self._process.join(_EXIT_WAIT_S)
        reason = f"the engine process {self.pid} exited (exit code {self._process.exitcode})"
        if self._failure:
            reason += f": {self._failure.strip().splitlines()[-1]}"
        return reason

    def _die(self, reason: str) -> None:
        """Refuse new requests and end every open stream with EngineDeadError."""
        with self._lock:
            if self._dead_reason is None:
                self._dead_reason = reason
            streams, self._streams = list(self._streams.values()), {}
        self._outbox.put(None)  # the writer exits
        if not self._is_stopping:
            logger.error("%s; failing %d in-flight requests", reason, len(streams))
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for stream in streams:
            by_loop.setdefault(stream.loop, []).append((stream.queue, EngineDeadError(reason)))
        _post(by_loop)


@dataclass(slots=True)
class PendingProcessEngine:
    """An engine process that is still loading its model."""

    config: EngineConfig
    process: BaseProcess
    conn: Connection

    def wait(
        self,
        progress: Progress | None = None,
        *,
        description: ModelDescription | None = None,
        timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> ProcessEngine:
        """Block until the model is loaded; EngineStartError with the child's error if it fails."""
        try:
            tokenizer = (description or describe_model(self.config)).tokenizer  # while the child loads
            ready = _wait_until_ready(self.conn, self.process, progress, timeout)
        except BaseException:
            self.cancel()
            raise
        return ProcessEngine(self.process, self.conn, ready, tokenizer)

    def cancel(self) -> None:
        """Stop the child without waiting for its model."""
        _kill(self.process)
        self.conn.close()


def _post(by_loop: dict[asyncio.AbstractEventLoop, list]) -> None:
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # that loop is closed: nobody is listening
            pass


def _wait_until_ready(conn: Connection, process: BaseProcess, progress: Progress | None, timeout: float) -> Ready:
    deadline = time.monotonic() + timeout
    while True:
        if not conn.poll(max(deadline - time.monotonic(), 0.0)):
            raise EngineStartError(f"the engine process did not load its model in {timeout:.0f}s")
        try:
            message = receive(conn)
        except (EOFError, OSError):
            process.join(_EXIT_WAIT_S)
            raise EngineStartError(f"the engine process exited (exit code {process.exitcode}) while loading") from None
        if isinstance(message, Ready):
            return message
        if isinstance(message, Failed):
            raise EngineStartError(f"the engine process failed to load the model:\n{message.message}")
        if isinstance(message, Loading) and progress is not None:
            progress(message.done, message.total)


def _kill(process: BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(5.0)


def start_process_engine(config: EngineConfig, progress: Progress | None = None) -> ProcessEngine:
    """`launch.start_engine`'s counterpart: the engine in its own process."""
    return ProcessEngine.start(config, progress)


def launch_process_engine(config: EngineConfig, start_method: str = "spawn") -> PendingProcessEngine:
    """Start loading `config`'s model in its own process; `.wait(progress)` gives the engine."""
    return ProcessEngine.launch(config, start_method=start_method)
