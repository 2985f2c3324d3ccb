"""Bringing a dead engine back: `SupervisedEngine` is the `EngineClient` of a model whose engine
may fail (a killed or crashed engine process) and is started again, with backoff, within a
restart budget.

While the engine is down, `is_alive` is False (`/health` names the model unavailable), a request
that arrives waits up to `RestartPolicy.wait_s` for the engine and is then refused with
`EngineUnavailableError` (a 503 with Retry-After); the requests that were running when it died
have already ended with `EngineDeadError`. Once the budget is spent the model stays down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from firebox.engine.client import AsyncEngine
from firebox.engine.ipc import IDLE_STATS
from firebox.engine.stats import EngineStats
from firebox.engine.types import EngineRequest, EngineUnavailableError, RequestOutput

logger = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting request looks whether the engine is back
GIVEN_UP_RETRY_AFTER_S = 60


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When and how often a failed engine is started again."""

    backoff_s: float = 0.5
    """Wait before the first restart; doubled for each restart already made within `window_s`."""
    max_backoff_s: float = 30.0
    """The longest wait before a restart."""
    max_restarts: int = 5
    """Restarts (failed ones included) allowed within `window_s`; after them the model stays down."""
    window_s: float = 600.0
    """The span over which restarts are counted."""
    wait_s: float = 10.0
    """How long a request that arrives while the engine is down waits for it before a 503."""

    def __post_init__(self) -> None:
        if min(self.backoff_s, self.max_backoff_s, self.window_s, self.wait_s) < 0 or self.max_restarts < 0:
            raise ValueError("restart policy values must be >= 0")


class SupervisedEngine:
    """An `EngineClient` over the current `AsyncEngine` of one model; `restart` builds a new one
    (blocking: a process launched and its model loaded) and is called on a thread of its own."""

    def __init__(
        self, engine: AsyncEngine, restart: Callable[[], AsyncEngine], policy: RestartPolicy = RestartPolicy()
    ) -> None:
        self.model_info = engine.model_info
        self.tokenizer = engine.tokenizer
        self.policy = policy
        self._engine = engine
        self._restart = restart
        self._restart_times: deque[float] = deque()  # monotonic times of the restarts within the window
        self._closed = threading.Event()
        self._has_given_up = False
        self._next_attempt_at = 0.0  # monotonic; when the restart under way is tried
        engine.on_failure(self._on_failure)

    @property
    def engine(self) -> AsyncEngine:
        """The current engine (a new one after each restart)."""
        return self._engine

    @property
    def is_alive(self) -> bool:
        return self._engine.is_alive

    @property
    def stats(self) -> EngineStats:
        return self._engine.stats if self._engine.is_alive else IDLE_STATS

    @property
    def num_restarts(self) -> int:
        return len(self._restart_times)

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        """As `AsyncEngine.generate`, on the engine of the moment; while it is down, wait for it
        up to `policy.wait_s`, then EngineUnavailableError."""
        stream = (await self._live_engine()).generate(request)
        try:
            async for output in stream:
                yield output
        finally:
            await stream.aclose()  # a consumer that leaves early aborts the request now

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)

    def shutdown(self, timeout: float | None = 5.0) -> None:
        """Stop supervising and shut the current engine down."""
        self._closed.set()
        self._engine.shutdown(timeout)

    async def _live_engine(self) -> AsyncEngine:
        deadline = time.monotonic() + self.policy.wait_s
        while not (engine := self._engine).is_alive:
            if self._has_given_up or self._closed.is_set() or time.monotonic() >= deadline:
                raise self._unavailable()
            await asyncio.sleep(POLL_S)
        return engine

    def _unavailable(self) -> EngineUnavailableError:
        name = self.model_info.name
        if self._has_given_up or self._closed.is_set():
            return EngineUnavailableError(f"model {name} is unavailable: its engine stopped", GIVEN_UP_RETRY_AFTER_S)
        retry_after = max(1, math.ceil(self._next_attempt_at - time.monotonic()))
        return EngineUnavailableError(f"model {name} is unavailable: its engine is restarting", retry_after)

    # --- the restart thread ------------------------------------------------------------------------

    def _on_failure(self, engine: AsyncEngine) -> None:
        if engine is self._engine and not self._closed.is_set():
            name = f"firebox-restart-{self.model_info.name.rsplit('/', 1)[-1]}"
            threading.Thread(target=self._restart_until_up, name=name, daemon=True).start()

    def _restart_until_up(self) -> None:
        while not self._closed.is_set():
            delay = self._backoff()
            if delay is None:
                logger.error("model %s: %d restarts in %.0fs; leaving its engine down",
                             self.model_info.name, self.num_restarts, self.policy.window_s)  # fmt: skip
                self._has_given_up = True
                return
            self._next_attempt_at = time.monotonic() + delay
            if self._closed.wait(delay):
                return
            self._restart_times.append(time.monotonic())
            logger.warning("model %s: restarting its engine (restart %d)", self.model_info.name, self.num_restarts)
            try:
                engine = self._restart()
            except Exception:
                logger.exception("model %s: the engine did not restart", self.model_info.name)
                continue
            self._install(engine)
            return

    def _backoff(self) -> float | None:
        """The wait before the next restart; None once the budget within the window is spent."""
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > self.policy.window_s:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.policy.max_restarts:
            return None
        return min(self.policy.backoff_s * 2 ** len(self._restart_times), self.policy.max_backoff_s)

    def _install(self, engine: AsyncEngine) -> None:
        if self._closed.is_set():
            engine.shutdown()
            return
        self._engine = engine
        logger.warning("model %s: engine restarted", self.model_info.name)
        engine.on_failure(self._on_failure)
