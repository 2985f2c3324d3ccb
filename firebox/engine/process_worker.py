"""The engine process: builds an engine core and steps it, serving one `ProcessEngine` over a pipe.

The loop is `AsyncEngine`'s, with the pipe in place of the condition variable: block on the pipe
while idle, otherwise drain whatever commands arrived, step once, and send the step's outputs as
one message. A closed pipe means the parent is gone, and the process exits.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

from firebox.config import EngineConfig
from firebox.engine.core import EngineCore
from firebox.engine.ipc import Abort, Command, Failed, Loading, Ready, Shutdown, Step, receive, rejection, send
from firebox.engine.launch import Progress, build_core
from firebox.engine.types import EngineError, ModelInfo

logger = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5
CoreBuilder = Callable[[EngineConfig, Progress | None], tuple[EngineCore, ModelInfo]]


def run_engine_process(
    config: EngineConfig, conn: Connection, build: CoreBuilder = build_core, log_level: int = logging.WARNING
) -> None:
    """The child's entry point (a module-level function, as the "spawn" start method needs)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _exit_with_parent(os.getppid())
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[engine]: %(message)s")
    try:
        core, info = build(config, lambda done, total: send(conn, Loading(done, total)))
    except BaseException:
        _send_quietly(conn, Failed(traceback.format_exc()))
        return
    # The loaded model's Python objects (tokenizer tables, modules) live as long as the process:
    # moved out of the collector's sight, they no longer make every full collection slow.
    gc.collect()
    gc.freeze()
    try:
        send(conn, Ready(info, core.stats(), os.getpid()))
        EngineLoop(core, conn).run()
    except (EOFError, OSError, SystemExit):
        return  # the parent closed the pipe, died or told us to stop: nobody is left to serve
    except BaseException:
        logger.exception("engine core failed")
        _send_quietly(conn, Failed(traceback.format_exc()))
        raise SystemExit(1) from None


def _exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM as SystemExit, so that `finally` blocks (file locks of a kernel build) still run."""
    raise SystemExit(0)


def _exit_with_parent(parent_pid: int) -> None:
    """A parent killed without stopping us (SIGKILL, OOM) must not leave us loading or waiting
    forever: once we are reparented, send ourselves SIGTERM."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="firebox-parent-watch", daemon=True).start()


def _send_quietly(conn: Connection, message: object) -> None:
    try:
        send(conn, message)
    except (OSError, ValueError):
        pass


class EngineLoop:
    def __init__(self, core: EngineCore, conn: Connection) -> None:
        self.core = core
        self.conn = conn

    def run(self) -> None:
        while True:
            commands = self._receive(block=not self.core.has_unfinished())
            step = Step([], self.core.stats())
            if self._apply(commands, step):
                step.outputs.extend(self.core.abort_all())
                self._send(step)
                return
            if self.core.has_unfinished():
                step.outputs.extend(self.core.step())
            if step.outputs or step.rejections:
                self._send(step)

    def _receive(self, block: bool) -> list[Command]:
        commands: list[Command] = []
        if block:
            commands.extend(receive(self.conn))
        while self.conn.poll():
            commands.extend(receive(self.conn))
        return commands

    def _apply(self, commands: list[Command], step: Step) -> bool:
        """Apply adds and aborts in order; True when shutdown is asked for."""
        for command in commands:
            if isinstance(command, Shutdown):
                return True
            if isinstance(command, Abort):
                step.outputs.extend(self.core.abort([command.request_id]))
                continue
            try:
                self.core.add_request(command)
            except (EngineError, ValueError) as exc:
                step.rejections.append(rejection(command.request_id, exc))
        return False

    def _send(self, step: Step) -> None:
        step.stats = self.core.stats()
        send(self.conn, step)
