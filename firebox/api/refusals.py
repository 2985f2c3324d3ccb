"""Inference requests refused before a service saw them: a bad key (401), a rate limit (429), an
unknown model (404), a body that does not validate (400), a server shutting down (503). The error
handlers hand each to `record_refusal`, which passes one `RequestRecord` to the app's recorder:
counted in /metrics (under an empty model name: the one asked for may be anything), and recorded
in usage as refused where the key is known. A request whose model was resolved has reached its
service, which records it itself (refusals included)."""

from __future__ import annotations

import re
import time
import uuid

from fastapi import Request

from firebox.request_record import RequestRecord

_INFERENCE_PATH = re.compile(r"(?:/inference)?/v1/(chat/completions|completions|responses|messages)/?")
_ENDPOINTS = {"chat/completions": "chat.completions", "completions": "completions", "responses": "responses",
              "messages": "messages"}  # fmt: skip


def mark_served(request: Request) -> None:
    """The request reached its service (its model resolved): the service records it."""
    request.state.is_served = True


def record_refusal(request: Request, status_code: int) -> None:
    """Record an inference request refused with `status_code` before its service saw it."""
    match = _INFERENCE_PATH.fullmatch(request.url.path)
    state = getattr(request.app.state, "firebox", None)
    if request.method != "POST" or match is None or state is None or state.recorder is None:
        return
    if getattr(request.state, "is_served", False):
        return
    state.recorder.refused(_refusal(request, _ENDPOINTS[match[1]], status_code))


def _refusal(request: Request, endpoint: str, status_code: int) -> RequestRecord:
    principal = getattr(request.state, "principal", None)
    arrival = getattr(request.state, "arrival_time", None) or time.monotonic()
    return RequestRecord(
        request_id=getattr(request.state, "request_id", None) or uuid.uuid4().hex,
        account_id=principal.account_id if principal is not None else "",
        key_id=principal.key_id if principal is not None else None,
        model="",
        deployment=None,
        endpoint=endpoint,
        prompt_tokens=0,
        cached_tokens=0,
        completion_tokens=0,
        ttft_s=None,
        latency_s=time.monotonic() - arrival,
        status_code=status_code,
        aborted=False,
        user=None,
        metadata=None,
        created=int(time.time()),
    )
