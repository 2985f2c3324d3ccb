"""Usage aggregates for the usage API: totals and latency percentiles per time bucket and group.

Percentiles are computed in Python over each bucket's rows, which works the same on SQLite and
PostgreSQL; the SQL side only filters by account and time (an index covers both).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from firebox.platform.db import Database
from firebox.platform.errors import InvalidArgumentError
from firebox.platform.schema import UsageRow
from firebox.platform.times import format_time, parse_time, utcnow

GRANULARITIES = ("hour", "day", "all")
"""`hour` and `day` are the contract; `all` (one bucket for the whole range) feeds tables."""
GROUP_COLUMNS = {"model": UsageRow.model, "key": UsageRow.key_id, "deployment": UsageRow.deployment}
_DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30), "all": timedelta(days=30)}
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = (len(sorted_values) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def _ms_percentiles(seconds: list[float]) -> tuple[float | None, float | None]:
    if not seconds:
        return None, None
    ordered = sorted(seconds)
    return round(percentile(ordered, 0.5) * 1000, 3), round(percentile(ordered, 0.99) * 1000, 3)


@dataclass(slots=True)
class _Bucket:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, row: Any) -> None:
        self.requests += 1
        self.prompt_tokens += row.prompt_tokens
        self.cached_tokens += row.cached_tokens
        self.completion_tokens += row.completion_tokens
        if row.ttft_s is not None:
            self.ttfts.append(row.ttft_s)
        if row.latency_s is not None:
            self.latencies.append(row.latency_s)

    def totals(self) -> dict[str, Any]:
        ttft_p50, ttft_p99 = _ms_percentiles(self.ttfts)
        latency_p50, latency_p99 = _ms_percentiles(self.latencies)
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens, "completion_tokens": self.completion_tokens,
                "ttft_p50_ms": ttft_p50, "ttft_p99_ms": ttft_p99,
                "latency_p50_ms": latency_p50, "latency_p99_ms": latency_p99}


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """A validated usage query: [start, end) in naive UTC."""

    start: datetime
    end: datetime
    granularity: str = "hour"
    group_by: str | None = None

    @classmethod
    def parse(cls, start: str | None, end: str | None, granularity: str | None,
              group_by: str | None) -> UsageWindow:
        granularity = granularity or "hour"
        if granularity not in GRANULARITIES:
            raise InvalidArgumentError(f"granularity must be one of {GRANULARITIES}")
        if group_by is not None and group_by not in GROUP_COLUMNS:
            raise InvalidArgumentError(f"group_by must be one of {tuple(GROUP_COLUMNS)}")
        end_time = parse_time(end) or utcnow()
        start_time = parse_time(start) or end_time - _DEFAULT_SPAN[granularity]
        if start_time >= end_time:
            raise InvalidArgumentError("start must be before end")
        return cls(start_time, end_time, granularity, group_by)

    def bucket_of(self, created: datetime) -> tuple[datetime, datetime]:
        if self.granularity == "all":
            return self.start, self.end
        if self.granularity == "hour":
            begin = created.replace(minute=0, second=0, microsecond=0)
        else:
            begin = created.replace(hour=0, minute=0, second=0, microsecond=0)
        return begin, begin + _STEP[self.granularity]


class UsageQuery:
    def __init__(self, database: Database) -> None:
        self._db = database

    def aggregate(self, account_id: str, window: UsageWindow) -> list[dict[str, Any]]:
        """Rows of the usage API's `data`, ordered by bucket start, then group."""
        buckets: dict[tuple[datetime, datetime, Any], _Bucket] = defaultdict(_Bucket)
        for row in self._rows(account_id, window):
            group = getattr(row, "group", None)
            buckets[(*window.bucket_of(row.created), group)].add(row)
        data = []
        for (begin, end, group), bucket in sorted(buckets.items(), key=lambda kv: (kv[0][0], str(kv[0][2]))):
            item: dict[str, Any] = {"start": format_time(begin), "end": format_time(end)}
            if window.group_by is not None:
                item[window.group_by] = group
            data.append(item | bucket.totals())
        return data

    def _rows(self, account_id: str, window: UsageWindow):
        columns = [UsageRow.created, UsageRow.prompt_tokens, UsageRow.cached_tokens,
                   UsageRow.completion_tokens, UsageRow.ttft_s, UsageRow.latency_s]
        if window.group_by is not None:
            columns.append(GROUP_COLUMNS[window.group_by].label("group"))
        query = select(*columns).where(UsageRow.account_id == account_id,
                                       UsageRow.created >= window.start, UsageRow.created < window.end)
        with self._db.session() as session:
            yield from session.execute(query.execution_options(yield_per=1000))
