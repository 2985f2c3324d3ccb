"""Per-key rate limits: requests per minute and tokens per minute, over a sliding 60 s window.

In memory and per process. `check()` admits a request (and counts it) or refuses it with the
seconds until it would be admitted; `add_tokens()` charges a finished request's tokens, so a key
over its token budget is refused until enough of its recent usage leaves the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firebox.request_record import RequestRecord

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float
    """Seconds until the request would be admitted; 0 when allowed."""
    headers: dict[str, str] = field(default_factory=dict)
    """`x-ratelimit-*` headers for the response (plus `retry-after` when refused)."""


def _format_duration(seconds: float) -> str:
    """OpenAI-style reset durations: `850ms`, `12.5s`, `1m0s`."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


@dataclass(slots=True)
class _Window:
    """(time, amount) events inside the last `WINDOW_S` seconds."""

    events: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - WINDOW_S:
            self.total -= self.events.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount

    def wait_until_below(self, limit: int, now: float) -> float:
        """Seconds until the total drops below `limit` (0 if it is already)."""
        excess = self.total - limit + 1  # units that must leave the window first
        if excess <= 0:
            return 0.0
        for event_time, amount in self.events:
            excess -= amount
            if excess <= 0:
                return max(0.0, event_time + WINDOW_S - now)
        return 0.0

    def reset_in(self, now: float) -> float:
        return self.events[0][0] + WINDOW_S - now if self.events else 0.0


@dataclass(slots=True)
class _KeyState:
    requests: _Window = field(default_factory=_Window)
    tokens: _Window = field(default_factory=_Window)


def _limits(principal: Any) -> tuple[int | None, int | None]:
    return getattr(principal, "requests_per_minute", None), getattr(principal, "tokens_per_minute", None)


class RateLimiter:
    """Limits come from the principal (`requests_per_minute`, `tokens_per_minute`; `None` means
    unlimited); state is keyed by `key_id`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _KeyState] = {}
        self._lock = threading.Lock()

    def check(self, principal: Any) -> RateDecision:
        rpm, tpm = _limits(principal)
        key_id = getattr(principal, "key_id", None)
        if key_id is None or (rpm is None and tpm is None):
            return RateDecision(True, 0.0)
        with self._lock:
            now = self._clock()
            state = self._state(key_id, now)
            wait = max(state.requests.wait_until_below(rpm, now) if rpm else 0.0,
                       state.tokens.wait_until_below(tpm, now) if tpm else 0.0)
            if wait <= 0:
                state.requests.add(now, 1)
            headers = self._headers(state, rpm, tpm, now)
        if wait > 0:
            headers["retry-after"] = str(math.ceil(wait))
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        return RateDecision(wait <= 0, wait, headers)

    def add_tokens(self, principal: Any, num_tokens: int) -> None:
        """Charge a finished request's tokens to the caller's key."""
        self._charge(principal.key_id, num_tokens)

    def observe_request(self, record: RequestRecord) -> None:
        """Completion callback: charge prompt + completion tokens of a finished request."""
        self._charge(record.key_id, record.prompt_tokens + record.completion_tokens)

    def _charge(self, key_id: str | None, num_tokens: int) -> None:
        """Keys never checked with a limit are skipped: there is nothing to refuse them."""
        if key_id is None or num_tokens <= 0:
            return
        with self._lock:
            state = self._states.get(key_id)
            if state is not None:
                state.tokens.add(self._clock(), num_tokens)

    def _state(self, key_id: str, now: float) -> _KeyState:
        state = self._states.setdefault(key_id, _KeyState())
        state.requests.prune(now)
        state.tokens.prune(now)
        return state

    @staticmethod
    def _headers(state: _KeyState, rpm: int | None, tpm: int | None, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, limit, window in (("requests", rpm, state.requests), ("tokens", tpm, state.tokens)):
            if limit is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, limit - window.total))
            headers[f"x-ratelimit-reset-{kind}"] = _format_duration(window.reset_in(now))
        return headers
