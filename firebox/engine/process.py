"""Launching an engine in its own process: spawn the child (`process_worker.py`), wait until its
model is loaded (`Ready`), and give back an `AsyncEngine` over a `ProcessTransport`.

The launch returns at once, so the child loads its model while the caller does other work (the
CLI imports the server meanwhile); `PendingProcessEngine.wait()` gives the engine, or raises
`EngineStartError` with the child's error. The tokenizer is read in this process, so serving
never waits on the child to tokenize.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from firebox.config import EngineConfig
from firebox.engine.build import CoreBuilder, Progress, build_core
from firebox.engine.client import AsyncEngine
from firebox.engine.describe import ModelDescription, describe_model
from firebox.engine.ipc import Failed, Loading, Ready, receive
from firebox.engine.process_worker import run_engine_process
from firebox.engine.transport.process import EXIT_WAIT_S, ProcessTransport, kill

DEFAULT_START_TIMEOUT_S = 600.0


class EngineStartError(RuntimeError):
    """The engine process failed to load its model (the child's traceback is the message)."""


def launch_process_engine(
    config: EngineConfig, start_method: str = "spawn", *, build: CoreBuilder = build_core
) -> PendingProcessEngine:
    """Start the engine process and return at once; `wait()` gives the engine. "spawn" is safe
    anywhere; "fork" skips a fresh interpreter and its imports, and is only for a parent with no
    threads yet. `build` is what the child runs to build its core (tests pass a fake)."""
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
    return PendingProcessEngine(config, process, conn, build)


@dataclass(slots=True)
class PendingProcessEngine:
    """An engine process that is still loading its model."""

    config: EngineConfig
    process: BaseProcess
    conn: Connection
    build: CoreBuilder = build_core
    description: ModelDescription | None = None  # read by wait(), kept for restarts

    def wait(
        self,
        progress: Progress | None = None,
        *,
        description: ModelDescription | None = None,
        timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> AsyncEngine:
        """Block until the model is loaded; EngineStartError with the child's error if it fails."""
        try:
            self.description = description or describe_model(self.config)  # while the child loads
            tokenizer = self.description.tokenizer
            ready = _wait_until_ready(self.conn, self.process, progress, timeout)
        except BaseException:
            self.cancel()
            raise
        transport = ProcessTransport(self.process, self.conn, ready.pid)
        return AsyncEngine(transport, ready.model_info, tokenizer, ready.stats)

    def restart(self) -> AsyncEngine:
        """A new engine process of the same model, once `wait()` has given the first (spawned: the
        caller has threads by now, which a fork would copy mid-flight)."""
        relaunch = launch_process_engine(self.config, "spawn", build=self.build)
        return relaunch.wait(description=self.description)

    def cancel(self) -> None:
        """Stop the child without waiting for its model."""
        kill(self.process)
        self.conn.close()


def _wait_until_ready(conn: Connection, process: BaseProcess, progress: Progress | None, timeout: float) -> Ready:
    deadline = time.monotonic() + timeout
    while True:
        if not conn.poll(max(deadline - time.monotonic(), 0.0)):
            raise EngineStartError(f"the engine process did not load its model in {timeout:.0f}s")
        try:
            message = receive(conn)
        except (EOFError, OSError):
            process.join(EXIT_WAIT_S)
            raise EngineStartError(f"the engine process exited (exit code {process.exitcode}) while loading") from None
        if isinstance(message, Ready):
            return message
        if isinstance(message, Failed):
            raise EngineStartError(f"the engine process failed to load the model:\n{message.message}")
        if isinstance(message, Loading) and progress is not None:
            progress(message.done, message.total)
