"""`UsageEntry`: one request's usage, normalised from serving's `RequestRecord` (or a dict).

The platform does not import serving: any object (or mapping) with the record's attributes is
accepted, and a few alternative spellings of the timing fields are read too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from firebox.config import DEFAULT_ACCOUNT

_ALIASES: dict[str, tuple[str, ...]] = {
    "ttft_s": ("ttft_s", "ttft", "ttft_seconds", "time_to_first_token"),
    "latency_s": ("latency_s", "latency", "latency_seconds", "e2e_latency"),
    "status_code": ("status_code", "status"),
    "end_user": ("user", "end_user"),
    "metadata": ("metadata", "request_metadata"),
    "created": ("created", "created_at", "timestamp"),
    "finish_reason": ("finish_reason", "finished_reason"),
}


def _read(record: Any, name: str, default: Any = None) -> Any:
    for candidate in _ALIASES.get(name, (name,)):
        if isinstance(record, Mapping):
            value = record.get(candidate)
        else:
            value = getattr(record, candidate, None)
        if value is not None:
            return value
    return default


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class UsageEntry:
    request_id: str
    account_id: str
    key_id: str | None
    model: str
    deployment: str | None
    endpoint: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float | None
    latency_s: float | None
    status_code: int
    aborted: bool
    end_user: str | None
    metadata: dict[str, Any] | None
    created: float
    """Unix seconds."""
    finish_reason: str | None = field(default=None)

    @classmethod
    def from_record(cls, record: Any) -> UsageEntry:
        request_id = _read(record, "request_id")
        if not request_id:
            raise ValueError("a usage record needs a request_id")
        return cls(
            request_id=str(request_id), account_id=_read(record, "account_id", DEFAULT_ACCOUNT),
            key_id=_read(record, "key_id"), model=str(_read(record, "model", "")),
            deployment=_read(record, "deployment"), endpoint=str(_read(record, "endpoint", "")),
            prompt_tokens=int(_read(record, "prompt_tokens", 0)),
            cached_tokens=int(_read(record, "cached_tokens", 0)),
            completion_tokens=int(_read(record, "completion_tokens", 0)),
            ttft_s=_optional_float(_read(record, "ttft_s")),
            latency_s=_optional_float(_read(record, "latency_s")),
            status_code=int(_read(record, "status_code", 200)), aborted=bool(_read(record, "aborted", False)),
            end_user=_read(record, "end_user"), metadata=_read(record, "metadata"),
            created=_epoch(_read(record, "created", time.time())),
            finish_reason=_read(record, "finish_reason"),
        )

    def to_json_line(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), default=str).encode() + b"\n"

    @classmethod
    def from_json_line(cls, line: bytes | str) -> UsageEntry:
        return cls(**json.loads(line))

    def to_columns(self) -> dict[str, Any]:
        """Values by column name of `usage_records`."""
        columns = asdict(self)
        del columns["finish_reason"]
        columns["created"] = datetime.fromtimestamp(self.created, UTC).replace(tzinfo=None)
        return columns
