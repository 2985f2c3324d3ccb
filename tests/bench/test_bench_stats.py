"""The statistics of a load level, on hand-made request results with known answers."""

from __future__ import annotations

import pytest

from firebox.bench.stats import Distribution, distribution_ms, percentile, summarize
from firebox.bench.stream import RequestResult


def ok(ttft: float, latency: float, output_tokens: int, itls: list[float], prompt_tokens: int = 10) -> RequestResult:
    return RequestResult(
        max_tokens=4,
        is_ok=True,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        has_usage=True,
        ttft=ttft,
        latency=latency,
        itls=itls,
    )


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 100, 4),
        ([4, 1, 3, 2], 90, 3.7),  # unsorted input; rank 2.7 between 3 and 4
        (list(range(1, 101)), 99, 99.01),
        ([7.0], 99, 7.0),
    ],
)
def test_percentile_interpolates_linearly_between_ranks(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_none_and_q_is_checked() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution_is_in_milliseconds() -> None:
    d = distribution_ms([0.001, 0.002, 0.003, 0.004])
    assert (d.mean, d.p50, d.p90, d.p99) == pytest.approx((2.5, 2.5, 3.7, 3.97))
    assert distribution_ms([]) == Distribution(None, None, None, None)


def test_summarize_throughputs_and_latencies() -> None:
    results = [
        ok(ttft=0.1, latency=0.4, output_tokens=4, itls=[0.1, 0.1, 0.1]),
        ok(ttft=0.2, latency=0.8, output_tokens=4, itls=[0.2, 0.2, 0.2]),
        RequestResult(max_tokens=4, error="HTTP 429: busy"),
    ]
    m = summarize(results, duration_s=2.0, concurrency=2, request_rate=None)
    assert (m.num_requests, m.completed, m.failed) == (3, 2, 1)
    assert m.request_throughput == 1.0
    assert m.output_throughput == 4.0  # 8 tokens in 2 s
    assert m.total_token_throughput == 14.0  # (20 + 8) / 2
    assert (m.total_input_tokens, m.total_output_tokens) == (20, 8)
    assert m.ttft_ms.mean == pytest.approx(150.0)
    assert m.tpot_ms.mean == pytest.approx(150.0)  # (0.3 / 3 + 0.6 / 3) / 2
    assert m.itl_ms.p50 == pytest.approx(150.0)  # six gaps pooled over both requests
    assert m.e2e_latency_ms.p50 == pytest.approx(600.0)
    assert m.token_count_source == "usage"
    assert m.num_length_mismatch == 0
    assert m.errors == ["HTTP 429: busy"]


def test_summarize_flags_guessed_counts_and_short_outputs() -> None:
    guessed = ok(ttft=0.1, latency=0.2, output_tokens=2, itls=[0.1])
    guessed.has_usage = False
    m = summarize([guessed, ok(0.1, 0.4, 4, [0.1] * 3)], duration_s=1.0, concurrency=1, request_rate=2.0)
    assert m.token_count_source == "mixed"
    assert m.num_length_mismatch == 1
    assert m.request_rate == 2.0
    m = summarize([guessed], duration_s=1.0, concurrency=1, request_rate=None)
    assert m.token_count_source == "chunks"
    assert m.tpot_ms.mean == pytest.approx(100.0)


def test_summarize_of_only_failures_has_no_latencies() -> None:
    m = summarize([RequestResult(max_tokens=4, error="boom")] * 3, 1.0, 1, None)
    assert (m.completed, m.failed, m.output_throughput) == (0, 3, 0.0)
    assert m.ttft_ms.p50 is None
    assert m.errors == ["boom"]  # distinct messages only
    with pytest.raises(ValueError):
        summarize([], 0.0, 1, None)
