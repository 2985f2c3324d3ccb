"""One record per request when it ends, handed to the completion callbacks (usage, metrics).

The API layer builds a `RequestContext` when a request arrives; the services fill a
`RequestRecord` (firebox/request_record.py, shared with the platform) from it and from the
engine's figures when the request is over, streamed, aborted or failed alike, and pass it to every
callback exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from firebox.request_record import RequestRecord
from firebox.serving.auth import Principal
from firebox.serving.errors import UsageUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the API layer knows of a request before the service runs."""

    request_id: str
    principal: Principal
    endpoint: str  # "chat.completions", "completions", ...
    arrival_time: float  # time.monotonic() when the request arrived
    created: int  # unix seconds, the `created` of the response
    cache_isolation_key: str | None = None  # x-prompt-cache-isolation-key header
    session_affinity: str | None = None  # x-session-affinity header: same key, same replica

    def cache_salt(self, isolation_key: str | None) -> str:
        """The prefix-cache salt: the caller's account, so that no account can probe another's
        prompts through `cached_tokens`, and within it the request's isolation key (the body's
        `prompt_cache_isolation_key`, else the header's)."""
        key = isolation_key or self.cache_isolation_key
        return self.principal.account_id if key is None else f"{self.principal.account_id}\x00{key}"


def refusal_record(
    ctx: RequestContext,
    model: str,
    deployment: str | None,
    status_code: int,
    user: str | None,
    metadata: dict[str, str] | None,
) -> RequestRecord:
    """The record of a request refused before it reached the engine (bad parameter, prompt too long)."""
    return RequestRecord(
        request_id=ctx.request_id,
        account_id=ctx.principal.account_id,
        key_id=ctx.principal.key_id,
        model=model,
        deployment=deployment,
        endpoint=ctx.endpoint,
        prompt_tokens=0,
        cached_tokens=0,
        completion_tokens=0,
        ttft_s=None,
        latency_s=time.monotonic() - ctx.arrival_time,
        status_code=status_code,
        aborted=False,
        user=user,
        metadata=metadata,
        created=ctx.created,
    )


CompletionCallback = Callable[[RequestRecord], None]


class UsageLedger(Protocol):
    """Where usage is billed (the platform's `UsageRecorder`)."""

    def begin(self, record: RequestRecord) -> None:
        """Note a request about to be served (`record`: as it stands if the server dies now);
        raises if usage cannot be recorded."""
        ...

    def record(self, record: RequestRecord) -> None:
        """The request's final record; raises if it cannot be recorded."""
        ...


class RequestRecorder:
    """Hands each record to the ledger and to every callback; a failing callback is logged, never
    raised. A ledger that cannot record refuses the request (`UsageUnavailableError`, a 503) at
    `begin`, and at `emit` when the answer is still unsent (`must_bill`)."""

    def __init__(self, callbacks: Sequence[CompletionCallback] = (), ledger: UsageLedger | None = None) -> None:
        self._callbacks = tuple(callbacks)
        self._ledger = ledger

    def begin(self, record: RequestRecord) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.begin(record)
        except Exception:
            logger.exception("usage could not be recorded; refusing request %s", record.request_id)
            raise UsageUnavailableError() from None

    def emit(self, record: RequestRecord, *, must_bill: bool = False) -> None:
        is_billed = self._bill(record)
        self._notify(record)
        if must_bill and not is_billed:
            raise UsageUnavailableError()

    def refused(self, record: RequestRecord) -> None:
        """A request refused before any service saw it (401, 404, 429, 400): counted by the
        callbacks (metrics), and recorded in usage where a key is known."""
        if record.key_id is not None:
            self._bill(record)
        self._notify(record)

    def _notify(self, record: RequestRecord) -> None:
        for callback in self._callbacks:
            try:
                callback(record)
            except Exception:
                logger.exception("completion callback %r failed", callback)

    def _bill(self, record: RequestRecord) -> bool:
        if self._ledger is None:
            return True
        try:
            self._ledger.record(record)
        except Exception:
            logger.exception("usage of request %s could not be recorded", record.request_id)
            return False
        return True
