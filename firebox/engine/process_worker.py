"""The engine process: builds an engine core and steps it, serving one `ProcessTransport` over a pipe.

The loop is the thread transport's (`core_loop.py`), with the pipe in place of the condition
variable: block on the pipe while idle, otherwise drain whatever commands arrived, step once, and
send the step as one message. A closed pipe means the parent is gone, and the process exits.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection

from firebox.config import EngineConfig
from firebox.engine.build import CoreBuilder, build_core
from firebox.engine.core_loop import run_core_loop
from firebox.engine.ipc import Command, Failed, Loading, Ready, receive, send

logger = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5


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
        run_core_loop(core, lambda block: _receive(conn, block), lambda step: send(conn, step))
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


def _receive(conn: Connection, block: bool) -> list[Command]:
    """Whatever commands have arrived, all at once; with `block`, wait for the first."""
    commands: list[Command] = []
    if block:
        commands.extend(receive(conn))
    while conn.poll():
        commands.extend(receive(conn))
    return commands
