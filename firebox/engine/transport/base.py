"""The interface between the one engine client and the two places its core can run.

The client (`engine/client.py`) owns everything request-shaped: the per-request streams, the
`generate()` loop, failing open streams when the engine dies. A transport only carries commands
to the core loop (`engine/core_loop.py`) and carries each `Step` back.
"""

from __future__ import annotations

from typing import Protocol

from firebox.engine.ipc import Step
from firebox.engine.types import EngineRequest


class StepSink(Protocol):
    """What a transport reports to, from its own thread (never the event loop's)."""

    def deliver(self, step: Step) -> None:
        """One engine step: its outputs, the requests the core refused, fresh stats."""
        ...

    def die(self, reason: str, *, is_failure: bool) -> None:
        """The core is gone (shut down, crashed, process exited) and will deliver nothing more;
        called once, after the last `deliver`."""
        ...


class EngineTransport(Protocol):
    """Carries commands from an `AsyncEngine` to its engine core and the core's steps back.

    - `submit` and `abort` are called on the event loop and must never block on the core (a lock
      held only to hand the command over is fine; a pipe write is not);
    - every engine step that produced something reaches `StepSink.deliver` as one `Step`;
    - when the core can deliver nothing more, `StepSink.die` is called once with the reason.

    Implementations: `ThreadTransport` (the core stepped on a thread of this process, an idle
    thread asleep on a condition variable) and `ProcessTransport` (the core in a child process, a
    pipe between them, one message per step).
    """

    def start(self, sink: StepSink) -> None:
        """Begin delivering to `sink`; called once, by the client's constructor."""
        ...

    def submit(self, request: EngineRequest) -> None:
        """Hand a request to the core; a refusal comes back as a rejection in a later `Step`."""
        ...

    def abort(self, request_id: str) -> None:
        """Ask the core to finish a request; its ABORT delta comes back in a later `Step`."""
        ...

    def shutdown(self, timeout: float | None) -> None:
        """Abort every request (their ABORT deltas are delivered), stop the core and wait up to
        `timeout` seconds for it; `die` is called on the way out."""
        ...
