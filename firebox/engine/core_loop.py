"""The loop that steps an `EngineCore` for a client: on the thread transport's thread, or in the
engine process.

Each turn takes the commands that arrived (blocking only while the core is idle), applies them in
order, steps once, and emits everything the turn produced as one `Step`: the abort deltas, the
step's outputs, the refused requests and fresh stats. One `Step` per turn is what keeps the
process transport at one pickle and one pipe write per step, and every transport at one wake-up of
each event loop per step.
"""

from __future__ import annotations

from collections.abc import Callable

from firebox.engine.core import EngineCore
from firebox.engine.ipc import Abort, Command, Rejection, Shutdown, Step, rejection
from firebox.engine.types import EngineError, RequestFailedError, RequestOutput

Receive = Callable[[bool], list[Command]]  # argument: block until at least one command arrives
Emit = Callable[[Step], None]

REQUEST_FAILED = "the engine failed while running this request"


def run_core_loop(core: EngineCore, receive: Receive, emit: Emit) -> None:
    """Step `core` until a `Shutdown` command, which aborts every request and emits the last Step.
    Requests that failed inside a step come back as rejections (`RequestFailedError`); an exception
    the core lets through propagates, and the caller reports the engine dead."""
    while True:
        commands = receive(not core.has_unfinished())
        outputs: list[RequestOutput] = []
        rejections: list[Rejection] = []
        is_shutdown = apply_commands(core, commands, outputs, rejections)
        if is_shutdown:
            outputs.extend(core.abort_all())
        elif core.has_unfinished():
            outputs.extend(core.step())
            rejections.extend(rejection(i, RequestFailedError(REQUEST_FAILED)) for i in core.take_failures())
        if outputs or rejections or is_shutdown:
            emit(Step(outputs, core.stats(), rejections))
        if is_shutdown:
            return


def apply_commands(
    core: EngineCore, commands: list[Command], outputs: list[RequestOutput], rejections: list[Rejection]
) -> bool:
    """Apply adds and aborts in order; True when shutdown is asked for (later commands are dropped)."""
    for command in commands:
        if isinstance(command, Shutdown):
            return True
        if isinstance(command, Abort):
            outputs.extend(core.abort([command.request_id]))
            continue
        try:
            core.add_request(command)
        except (EngineError, ValueError) as exc:
            rejections.append(rejection(command.request_id, exc))
    return False
