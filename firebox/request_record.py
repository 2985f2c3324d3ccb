"""`RequestRecord`: one finished request, as serving reports it to the platform.

Serving fills it when a request ends (streamed, aborted, refused or failed alike); the platform's
completion callbacks (usage journal, Prometheus metrics, token rate limits) read it. It lives at
the package root, importing nothing, because the platform may not import serving.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    account_id: str
    key_id: str | None
    model: str
    deployment: str | None
    endpoint: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int  # only what was generated, also for an aborted stream
    ttft_s: float | None  # None when no token was produced
    latency_s: float  # arrival to end
    status_code: int  # 200 for a stream that started, even if it was aborted later
    aborted: bool  # the client went away before the end
    user: str | None
    metadata: dict[str, str] | None
    created: int  # unix seconds
    finish_reason: str | None = None  # of the first choice; None when it did not finish
