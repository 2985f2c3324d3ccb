"""Rate limits: requests per minute and tokens per minute, over a sliding 60 s window, for each key
and for each account (one pair of windows shared by all of the account's keys).

In memory and per process. `check()` admits a request only if its key's windows and its account's
both allow it (and counts it in both), or refuses it with the seconds until it would be admitted;
`add_tokens()` charges a finished request's tokens to both, so a key or an account over its token
budget is refused until enough of its recent usage leaves the window.
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
    message: str = ""
    """Why it was refused, naming the limit (the key's or the account's); empty when allowed."""


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
class _Windows:
    requests: _Window = field(default_factory=_Window)
    tokens: _Window = field(default_factory=_Window)


@dataclass(frozen=True, slots=True)
class _Scope:
    """One pair of limits and where its windows are kept: a key's, or its account's."""

    state_id: tuple[str, str]
    """("key", key_id) or ("account", account_id): keys and accounts never share windows."""
    refusal: str
    """The 429's message when this scope refuses."""
    max_requests: int | None
    max_tokens: int | None

    def counted(self, windows: _Windows) -> tuple[tuple[str, int | None, _Window], ...]:
        """(kind, limit, window) of each kind this scope counts."""
        return ("requests", self.max_requests, windows.requests), ("tokens", self.max_tokens, windows.tokens)

    def wait(self, windows: _Windows, now: float) -> float:
        """Seconds until both of this scope's windows admit one more request."""
        return max((window.wait_until_below(limit, now) for _, limit, window in self.counted(windows) if limit),
                   default=0.0)


_KEY_REFUSAL = "rate limit exceeded for this API key; retry later"
_ACCOUNT_REFUSAL = "rate limit exceeded for this account (shared by all of its API keys); retry later"


def _limited_scopes(principal: Any) -> list[_Scope]:
    """The key's and the account's limits, those set. Principals without a key (the operator's
    admin keys) are unlimited."""
    key_id = getattr(principal, "key_id", None)
    if key_id is None:
        return []
    scopes = [
        _Scope(("key", key_id), _KEY_REFUSAL, getattr(principal, "requests_per_minute", None),
               getattr(principal, "tokens_per_minute", None)),
        _Scope(("account", principal.account_id), _ACCOUNT_REFUSAL,
               getattr(principal, "account_requests_per_minute", None),
               getattr(principal, "account_tokens_per_minute", None)),
    ]  # fmt: skip
    return [s for s in scopes if s.max_requests is not None or s.max_tokens is not None]


class RateLimiter:
    """Limits come from the principal (`requests_per_minute`, `tokens_per_minute` for its key,
    `account_requests_per_minute`, `account_tokens_per_minute` for its account; `None` means
    unlimited); state is keyed by `key_id` and by `account_id`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], _Windows] = {}
        self._lock = threading.Lock()

    def check(self, principal: Any) -> RateDecision:
        scopes = _limited_scopes(principal)
        if not scopes:
            return RateDecision(True, 0.0)
        with self._lock:
            now = self._clock()
            limited = [(scope, self._windows(scope.state_id, now)) for scope in scopes]
            waits = [scope.wait(windows, now) for scope, windows in limited]
            wait = max(waits)
            if wait <= 0:
                for _, windows in limited:
                    windows.requests.add(now, 1)
            headers = self._headers(limited, now)
        if wait <= 0:
            return RateDecision(True, 0.0, headers)
        headers["retry-after"] = str(math.ceil(wait))
        headers["retry-after-ms"] = str(math.ceil(wait * 1000))
        return RateDecision(False, wait, headers, scopes[waits.index(wait)].refusal)

    def add_tokens(self, principal: Any, num_tokens: int) -> None:
        """Charge a finished request's tokens to the caller's key and account."""
        self._charge(principal.key_id, principal.account_id, num_tokens)

    def observe_request(self, record: RequestRecord) -> None:
        """Completion callback: charge prompt + completion tokens of a finished request."""
        self._charge(record.key_id, record.account_id, record.prompt_tokens + record.completion_tokens)

    def _charge(self, key_id: str | None, account_id: str, num_tokens: int) -> None:
        """Keys and accounts never checked with a limit are skipped: there is nothing to refuse them.
        Requests without a key (the operator's) count against nothing."""
        if key_id is None or num_tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            for state_id in (("key", key_id), ("account", account_id)):
                if (windows := self._states.get(state_id)) is not None:
                    windows.tokens.add(now, num_tokens)

    def _windows(self, state_id: tuple[str, str], now: float) -> _Windows:
        windows = self._states.setdefault(state_id, _Windows())
        windows.requests.prune(now)
        windows.tokens.prune(now)
        return windows

    @staticmethod
    def _headers(limited: list[tuple[_Scope, _Windows]], now: float) -> dict[str, str]:
        """Per kind, the figures of the tighter limit (the key's or the account's): the fewer
        remaining, then the later reset."""
        figures: dict[str, list[tuple[int, int, float]]] = {}
        for scope, windows in limited:
            for kind, limit, window in scope.counted(windows):
                if limit is not None:
                    figures.setdefault(kind, []).append((limit, max(0, limit - window.total), window.reset_in(now)))
        headers: dict[str, str] = {}
        for kind, candidates in figures.items():
            limit, remaining, reset_s = min(candidates, key=lambda figure: (figure[1], -figure[2]))
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = _format_duration(reset_s)
        return headers
