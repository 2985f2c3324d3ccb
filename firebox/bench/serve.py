"""The load generator: warm-up, then one load level after another, each closed or open loop.

A level sends its requests at their arrival offsets (all at once, or Poisson arrivals at
`request_rate`) through a semaphore of `concurrency` slots, as vLLM's `--max-concurrency` does.
With an infinite rate that is a closed loop: `concurrency` requests always in flight.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import httpx

from firebox.bench.stats import LevelMetrics, summarize
from firebox.bench.stream import RequestResult, RequestSettings, send_request
from firebox.bench.workload import BenchRequest, arrival_offsets

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
OnDone = Callable[[int], None]  # called with the phase index (0 = warm-up) as each request ends


@dataclass(frozen=True, slots=True)
class LoadLevel:
    """One measured run: requests in flight at most, how many, and how they arrive."""

    concurrency: int
    num_requests: int
    request_rate: float = float("inf")  # requests/s of Poisson arrivals; inf: all at once

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.num_requests < 1:
            raise ValueError(f"concurrency and num_requests must be >= 1, got {self}")
        if not self.request_rate > 0:
            raise ValueError(f"request_rate must be > 0, got {self.request_rate}")


def default_num_requests(concurrency: int) -> int:
    """Enough requests for a stable figure without a long run: two rounds, at least 8."""
    return max(2 * concurrency, 8)


async def dispatch(
    offsets: Sequence[float],
    launch: Callable[[int], Awaitable[T]],
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
) -> list[T]:
    """Start `launch(i)` at `offsets[i]` seconds after now (offsets ascending); gather the results."""
    start = clock()
    tasks = []
    for i, offset in enumerate(offsets):
        delay = start + offset - clock()
        if delay > 0:
            await sleep(delay)
        tasks.append(asyncio.ensure_future(launch(i)))
    return list(await asyncio.gather(*tasks))


async def run_level(
    client: httpx.AsyncClient,
    settings: RequestSettings,
    requests: Sequence[BenchRequest],
    level: LoadLevel,
    seed: int,
    on_done: Callable[[], None] = lambda: None,
) -> tuple[list[RequestResult], float]:
    """Send `requests` under `level`; the results and the wall time from first send to last end."""
    slots = asyncio.Semaphore(level.concurrency)

    async def launch(i: int) -> RequestResult:
        async with slots:
            result = await send_request(client, settings, requests[i])
        on_done()
        return result

    start = time.perf_counter()
    results = await dispatch(arrival_offsets(len(requests), level.request_rate, seed), launch)
    return results, time.perf_counter() - start


async def run_benchmark(
    settings: RequestSettings,
    requests: Sequence[BenchRequest],
    levels: Sequence[LoadLevel],
    num_warmup: int,
    timeout: float,
    seed: int,
    on_done: OnDone = lambda phase: None,
) -> list[LevelMetrics]:
    """Warm-up (`num_warmup` requests at once, not measured), then each level in turn.

    `requests` holds the warm-up's first, then each level's, in order (see `requests_needed`)."""
    if len(requests) < requests_needed(levels, num_warmup):
        raise ValueError(f"{len(requests)} requests for {requests_needed(levels, num_warmup)} needed")
    max_in_flight = max([num_warmup, *(level.concurrency for level in levels)])
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    metrics = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        if num_warmup:
            warmup = LoadLevel(num_warmup, num_warmup)
            await run_level(client, settings, requests[:num_warmup], warmup, seed, lambda: on_done(0))
        start = num_warmup
        for phase, level in enumerate(levels, start=1):
            batch = requests[start : start + level.num_requests]
            start += level.num_requests
            advance = functools.partial(on_done, phase)
            results, duration = await run_level(client, settings, batch, level, seed + phase, advance)
            rate = None if math.isinf(level.request_rate) else level.request_rate
            metrics.append(summarize(results, duration, level.concurrency, rate))
    return metrics


def requests_needed(levels: Sequence[LoadLevel], num_warmup: int) -> int:
    return num_warmup + sum(level.num_requests for level in levels)
