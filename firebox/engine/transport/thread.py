"""`ThreadTransport`: the engine core stepped on a dedicated thread of this process.

Commands go into one list that the engine thread takes whole at the start of each step, so a step
never waits on the event loop and the event loop only ever holds the lock to append. An idle
engine thread sleeps on a condition variable; it never spins.
"""

from __future__ import annotations

import logging
import threading

from firebox.engine.core import EngineCore
from firebox.engine.core_loop import run_core_loop
from firebox.engine.ipc import Abort, Command, Shutdown
from firebox.engine.transport.base import StepSink
from firebox.engine.types import EngineRequest

logger = logging.getLogger(__name__)


class ThreadTransport:
    """An `EngineTransport` to a core on its own thread."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._cond = threading.Condition()
        self._commands: list[Command] = []  # guarded by _cond

    def start(self, sink: StepSink) -> None:
        self.thread = threading.Thread(target=self._run, args=(sink,), name="firebox-engine-core", daemon=True)
        self.thread.start()

    def submit(self, request: EngineRequest) -> None:
        self._send(request)

    def abort(self, request_id: str) -> None:
        self._send(Abort(request_id))

    def shutdown(self, timeout: float | None) -> None:
        self._send(Shutdown())
        self.thread.join(timeout)

    def _send(self, command: Command) -> None:
        with self._cond:
            self._commands.append(command)
            self._cond.notify()

    def _take_commands(self, block: bool) -> list[Command]:
        with self._cond:
            while block and not self._commands:
                self._cond.wait()
            commands, self._commands = self._commands, []
            return commands

    def _run(self, sink: StepSink) -> None:
        try:
            run_core_loop(self.core, self._take_commands, sink.deliver)
        except Exception as exc:
            logger.exception("engine core failed")
            sink.die(f"the engine failed: {exc!r}", is_failure=True)
        else:
            sink.die("the engine is shut down", is_failure=False)
