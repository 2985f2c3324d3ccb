"""`ProcessTransport`: the parent's end of the pipe to an engine process (`process_worker.py`).

- requests and aborts go to the child through an outbox drained by a writer thread, so the event
  loop never blocks on a full pipe; what queued up meanwhile goes as one message;
- each engine step comes back as one message (`ipc.Step`), read by one reader thread that passes
  it to the client, which wakes each event loop once;
- if the child dies the pipe closes at once: the reader reports the engine dead, with the child's
  exit code and last words.
"""

from __future__ import annotations

import logging
import queue
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from firebox.engine.ipc import Abort, Command, Failed, Shutdown, Step, receive, send
from firebox.engine.transport.base import StepSink
from firebox.engine.types import EngineRequest

logger = logging.getLogger(__name__)

EXIT_WAIT_S = 0.5  # for the exit code of a child whose pipe just closed


class ProcessTransport:
    """An `EngineTransport` to a core stepped in the child process `process`, over `conn`."""

    def __init__(self, process: BaseProcess, conn: Connection, pid: int) -> None:
        self.process = process
        self.pid = pid
        self._conn = conn
        self._outbox: queue.SimpleQueue[Command | None] = queue.SimpleQueue()  # None: the writer exits
        self._is_stopping = False
        self._failure: str | None = None  # the child's last words, if it sent any

    def start(self, sink: StepSink) -> None:
        name = f"firebox-engine-{{}}-{self.pid}"
        self._reader = threading.Thread(target=self._read, args=(sink,), name=name.format("reader"), daemon=True)
        self._writer = threading.Thread(target=self._write, name=name.format("writer"), daemon=True)
        self._reader.start()
        self._writer.start()

    def submit(self, request: EngineRequest) -> None:
        self._outbox.put(request)

    def abort(self, request_id: str) -> None:
        self._outbox.put(Abort(request_id))

    def shutdown(self, timeout: float | None) -> None:
        """Let the child abort everything and exit; kill it after `timeout`."""
        self._is_stopping = True
        self._outbox.put(Shutdown())
        self._outbox.put(None)
        self.process.join(timeout)
        if self.process.is_alive():
            logger.warning("engine process %d did not stop in %ss; killing it", self.pid, timeout)
            kill(self.process)
        self._reader.join(1.0)
        self._writer.join(1.0)
        self._conn.close()

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

    def _read(self, sink: StepSink) -> None:
        try:
            while True:
                message = receive(self._conn)
                if isinstance(message, Step):
                    sink.deliver(message)
                elif isinstance(message, Failed):
                    self._failure = message.message
        except (EOFError, OSError):
            pass
        self._outbox.put(None)  # the writer exits
        sink.die(self._exit_reason(), is_failure=not self._is_stopping)

    def _exit_reason(self) -> str:
        if self._is_stopping:
            return "the engine is shut down"
        self.process.join(EXIT_WAIT_S)
        reason = f"the engine process {self.pid} exited (exit code {self.process.exitcode})"
        if self._failure:
            reason += f": {self._failure.strip().splitlines()[-1]}"
        return reason


def kill(process: BaseProcess) -> None:
    """Kill `process` if it still runs, and reap it."""
    if process.is_alive():
        process.kill()
    process.join(5.0)
