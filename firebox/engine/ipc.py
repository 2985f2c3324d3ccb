"""Messages between an engine client and its core loop (`core_loop.py`), and how they cross a pipe.

Client -> core: requests to add, ids to abort, shutdown (`Command`). Core -> client: one `Step`
per engine step, holding every `RequestOutput` of that step, the requests the core refused and a
fresh `EngineStats`. The thread transport hands these over in memory; the process transport sends
one list of commands per write and one `Step` per step, so that its hot path costs one pickle and
one pipe write per step, however many requests are running. While the engine process loads, it
sends `Loading` and then `Ready` or `Failed`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from firebox.engine.stats import EngineStats
from firebox.engine.types import EngineError, EngineRequest, ModelInfo, PromptTooLongError, RequestOutput

PICKLE_PROTOCOL = 5
IDLE_STATS = EngineStats(0, 0, 0.0, 0, 0, 0)


# --- client -> core -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Abort everything, send the last step, then exit."""


Command = EngineRequest | Abort | Shutdown


# --- core -> client -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loading:
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Ready:
    model_info: ModelInfo
    stats: EngineStats
    pid: int


@dataclass(frozen=True, slots=True)
class Failed:
    """Loading or stepping raised; the child exits after sending this."""

    message: str  # the child's exception, with its traceback


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the core refused at admission; the error is rebuilt in the parent."""

    request_id: str
    error_type: type[Exception]
    args: tuple[Any, ...]

    def error(self) -> Exception:
        return self.error_type(*self.args)


@dataclass(slots=True)
class Step:
    outputs: list[RequestOutput]
    stats: EngineStats
    rejections: list[Rejection] = field(default_factory=list)


def rejection(request_id: str, exc: Exception) -> Rejection:
    """`exc` as something that survives pickling (PromptTooLongError takes two arguments)."""
    if isinstance(exc, PromptTooLongError):
        return Rejection(request_id, PromptTooLongError, (exc.num_prompt_tokens, exc.max_model_len))
    kind = type(exc) if isinstance(exc, EngineError | ValueError) else EngineError
    return Rejection(request_id, kind, (str(exc),))


# --- framing ------------------------------------------------------------------------------------


def send(conn: Connection, message: object) -> None:
    """Pickle with protocol 5 (Connection.send would use the default protocol)."""
    conn.send_bytes(pickle.dumps(message, protocol=PICKLE_PROTOCOL))


def receive(conn: Connection) -> Any:
    """The next message; EOFError or OSError once the other side is gone."""
    return pickle.loads(conn.recv_bytes())
