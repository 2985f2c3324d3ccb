"""Limits on what one key and one account have in flight, counted in choices (engine requests):
one request of 8 prompts with n = 128 holds 1,024 of them until its run closes. A request over a
limit is a 429 naming it before anything reaches an engine, so that one tenant cannot fill the
shared waiting queue (DESIGN.md: per-key and per-account limits on requests in flight)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from firebox.serving.auth import Principal
from firebox.serving.errors import RateLimitedError

RETRY_AFTER_S = "1"  # in-flight requests end at their own pace; a second is a fair first wait


class InflightLimiter:
    """Choices in flight per key and per account; 0 = unlimited. One event loop uses it, so the
    counters need no lock."""

    def __init__(self, per_key: int = 0, per_account: int = 0) -> None:
        self.per_key = per_key
        self.per_account = per_account
        self._by_key: Counter[str] = Counter()
        self._by_account: Counter[str] = Counter()

    def acquire(self, principal: Principal, choices: int) -> InflightLease:
        """Count `choices` for the caller's key and account, or raise `RateLimitedError`."""
        key, account = principal.key_id, principal.account_id
        if key is not None and self.per_key and self._by_key[key] + choices > self.per_key:
            raise _over("key", self.per_key, self._by_key[key])
        if self.per_account and self._by_account[account] + choices > self.per_account:
            raise _over("account", self.per_account, self._by_account[account])
        if key is not None:
            self._by_key[key] += choices
        self._by_account[account] += choices
        return InflightLease(self, key, account, choices)

    def in_flight(self, principal: Principal) -> tuple[int, int]:
        """(the key's, the account's) choices in flight."""
        key = principal.key_id
        return (self._by_key[key] if key is not None else 0), self._by_account[principal.account_id]

    def _release(self, lease: InflightLease) -> None:
        if lease.key_id is not None:
            self._by_key[lease.key_id] -= lease.choices
            if self._by_key[lease.key_id] <= 0:
                del self._by_key[lease.key_id]
        self._by_account[lease.account_id] -= lease.choices
        if self._by_account[lease.account_id] <= 0:
            del self._by_account[lease.account_id]


@dataclass(slots=True)
class InflightLease:
    """One request's share; `release()` (from `GenerationRun.close`) gives it back once."""

    limiter: InflightLimiter
    key_id: str | None
    account_id: str
    choices: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter._release(self)


def _over(scope: str, limit: int, held: int) -> RateLimitedError:
    return RateLimitedError(
        f"too many requests in flight for this {scope}: {held} choices running or waiting, at most {limit} "
        f"(--max-inflight-per-{scope}); retry when some finish",
        {"retry-after": RETRY_AFTER_S},
    )
