"""A benchmark's results as a rich table (one column per load level) and as a JSON document."""

from __future__ import annotations

import dataclasses
import datetime
import json
import resource
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from firebox.bench.stats import Distribution, LevelMetrics

LATENCIES = (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2E latency", "e2e_latency_ms"))
PERCENTILES = ("mean", "p50", "p90", "p99")


def results_document(config: dict[str, Any], levels: Sequence[LevelMetrics]) -> dict[str, Any]:
    """The JSON form: the run's settings, when it ran, the CPU the client itself used (it shares
    the machine with the server), and one object per level."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "config": config,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "levels": [dataclasses.asdict(level) for level in levels],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def format_number(value: float | None, digits: int = 1) -> str:
    """`1,234.5`, or `-` for a figure that was not measured."""
    return "-" if value is None else f"{value:,.{digits}f}"


def _row(table: Table, label: str, levels: Sequence[LevelMetrics], cell: Callable[[LevelMetrics], str]) -> None:
    table.add_row(label, *(cell(level) for level in levels))


def levels_table(levels: Sequence[LevelMetrics], title: str) -> Table:
    """Rows of metrics, one column per level (`c=<concurrency>`, plus the rate when open loop)."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for level in levels:
        rate = "" if level.request_rate is None else f" @{level.request_rate:g}/s"
        table.add_column(f"c={level.concurrency}{rate}", justify="right")
    _row(table, "completed / failed", levels, lambda m: f"{m.completed} / {m.failed}")
    _row(table, "duration (s)", levels, lambda m: format_number(m.duration_s, 2))
    _row(table, "request throughput (req/s)", levels, lambda m: format_number(m.request_throughput, 2))
    _row(table, "output tokens/s", levels, lambda m: format_number(m.output_throughput))
    _row(table, "total tokens/s", levels, lambda m: format_number(m.total_token_throughput))
    _row(table, "input / output tokens per request", levels, _tokens_per_request)
    for name, attr in LATENCIES:
        for stat in PERCENTILES:
            _row(table, f"{name} {stat} (ms)", levels, lambda m, a=attr, s=stat: format_number(_stat(m, a, s)))
    return table


def _stat(level: LevelMetrics, attr: str, stat: str) -> float | None:
    distribution: Distribution = getattr(level, attr)
    return getattr(distribution, stat)


def _tokens_per_request(level: LevelMetrics) -> str:
    if not level.completed:
        return "-"
    return f"{level.total_input_tokens / level.completed:.0f} / {level.total_output_tokens / level.completed:.0f}"


def notes(levels: Sequence[LevelMetrics]) -> list[str]:
    """Warnings a reader of the table must see: guessed token counts, short outputs, failures."""
    lines = []
    for level in levels:
        tag = f"c={level.concurrency}"
        if level.token_count_source in ("chunks", "mixed"):
            lines.append(f"{tag}: the server sent no usage; output tokens counted as content chunks (a guess)")
        if level.num_length_mismatch:
            lines.append(f"{tag}: {level.num_length_mismatch} requests did not generate exactly max_tokens tokens")
        lines.extend(f"{tag}: failed: {error}" for error in level.errors)
    return lines
