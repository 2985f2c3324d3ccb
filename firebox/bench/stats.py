"""From per-request results to the figures of one load level: throughputs and latency percentiles.

Definitions follow vLLM's `benchmark_serving`:
- TTFT: request sent -> first chunk with generated text.
- TPOT: per request, (latency - TTFT) / (output tokens - 1): the time per token after the first.
- ITL: every gap between successive content chunks, over all requests.
- throughputs: totals of the completed requests over the level's wall time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from firebox.bench.stream import RequestResult

MAX_ERRORS_KEPT = 5


@dataclass(frozen=True, slots=True)
class Distribution:
    """Mean and percentiles of a latency, in milliseconds; None when nothing was measured."""

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class LevelMetrics:
    """Everything one load level (one concurrency, one arrival rate) measured."""

    concurrency: int
    request_rate: float | None  # requests/s of the Poisson arrivals; None: all at once
    num_requests: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float  # completed requests/s
    output_throughput: float  # output tokens/s
    total_token_throughput: float  # (input + output) tokens/s
    total_input_tokens: int
    total_output_tokens: int
    token_count_source: str  # usage | chunks (no usage from the server) | mixed | none
    num_length_mismatch: int  # completed requests whose output tokens differ from max_tokens
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    e2e_latency_ms: Distribution
    errors: list[str] = field(default_factory=list)  # the first few distinct failure messages


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def distribution_ms(seconds: Sequence[float]) -> Distribution:
    if not seconds:
        return Distribution(None, None, None, None)
    ms = [s * 1000 for s in seconds]
    return Distribution(sum(ms) / len(ms), percentile(ms, 50), percentile(ms, 90), percentile(ms, 99))


def token_count_source(completed: Sequence[RequestResult]) -> str:
    if not completed:
        return "none"
    with_usage = sum(r.has_usage for r in completed)
    if with_usage == len(completed):
        return "usage"
    return "chunks" if with_usage == 0 else "mixed"


def distinct_errors(results: Sequence[RequestResult]) -> list[str]:
    errors = dict.fromkeys(r.error for r in results if not r.is_ok)
    return list(errors)[:MAX_ERRORS_KEPT]


def summarize(
    results: Sequence[RequestResult], duration_s: float, concurrency: int, request_rate: float | None
) -> LevelMetrics:
    """The figures of one level from its results and its wall time."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    done = [r for r in results if r.is_ok]
    input_tokens = sum(r.prompt_tokens for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in done if r.output_tokens > 1]
    return LevelMetrics(
        concurrency=concurrency,
        request_rate=request_rate,
        num_requests=len(results),
        completed=len(done),
        failed=len(results) - len(done),
        duration_s=duration_s,
        request_throughput=len(done) / duration_s,
        output_throughput=output_tokens / duration_s,
        total_token_throughput=(input_tokens + output_tokens) / duration_s,
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        token_count_source=token_count_source(done),
        num_length_mismatch=sum(r.output_tokens != r.max_tokens for r in done),
        ttft_ms=distribution_ms([r.ttft for r in done]),
        tpot_ms=distribution_ms(tpots),
        itl_ms=distribution_ms([gap for r in done for gap in r.itls]),
        e2e_latency_ms=distribution_ms([r.latency for r in done]),
        errors=distinct_errors(results),
    )
