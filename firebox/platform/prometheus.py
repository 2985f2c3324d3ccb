"""Prometheus metrics named like vLLM's, with the prefix `firebox:`, in a registry of their own.

Counters and histograms are fed from finished requests (`observe_request`) and from the streaming
path (`observe_inter_token`); gauges and the prefix-cache counters are read from each engine's
`stats()` at scrape time, so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from firebox.request_record import RequestRecord

logger = logging.getLogger(__name__)
FINISH_REASONS = ("stop", "length", "abort")
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                 7.5, 10.0, 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                120.0, 240.0, 480.0, 960.0)


class EngineStats(Protocol):
    """What `engine.stats()` returns; prefix-cache figures are cumulative token counts."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_draft_tokens: int
    num_accepted_draft_tokens: int


StatsProvider = Callable[[], EngineStats]


GroupProvider = Callable[[], Mapping[str, EngineStats]]  # stats by model name, of engines that come and go


class _EngineStatsCollector:
    """Reads every registered engine's stats at scrape time."""

    def __init__(self, providers: dict[str, StatsProvider], groups: list[GroupProvider]) -> None:
        self._providers = providers
        self._groups = groups

    def collect(self) -> Iterator[Metric]:
        families = [
            GaugeMetricFamily("firebox:num_requests_running", "Requests running in the engine.",
                              labels=["model_name"]),
            GaugeMetricFamily("firebox:num_requests_waiting", "Requests waiting to be scheduled.",
                              labels=["model_name"]),
            GaugeMetricFamily("firebox:kv_cache_usage", "Fraction of KV-cache blocks in use (0..1).",
                              labels=["model_name"]),
            CounterMetricFamily("firebox:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                                labels=["model_name"]),
            CounterMetricFamily("firebox:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                                labels=["model_name"]),
            CounterMetricFamily("firebox:spec_decode_num_draft_tokens", "Drafted tokens verified (speculation).",
                                labels=["model_name"]),
            CounterMetricFamily("firebox:spec_decode_num_accepted_tokens", "Drafted tokens kept (speculation).",
                                labels=["model_name"]),
        ]
        fields = ("num_running", "num_waiting", "kv_cache_usage", "prefix_cache_queries", "prefix_cache_hits",
                  "num_draft_tokens", "num_accepted_draft_tokens")
        for model_name, stats in self._stats():
            for family, name in zip(families, fields):
                family.add_metric([model_name], float(getattr(stats, name, 0)))  # older stats: no speculation
        yield from families

    def _stats(self) -> Iterator[tuple[str, EngineStats]]:
        for model_name, provider in list(self._providers.items()):
            try:
                yield model_name, provider()
            except Exception:  # a dead engine must not break the scrape of the others
                logger.exception("stats() of %s failed", model_name)
        for group in list(self._groups):
            try:
                yield from group().items()
            except Exception:
                logger.exception("stats of %r failed", group)


class PlatformMetrics:
    """The `/metrics` registry. Call `add_engine()` per served model at start-up."""

    def __init__(self, inter_token_from_records: bool = True) -> None:
        """With `inter_token_from_records`, `observe_request` fills the inter-token histogram
        from each record's mean gap; pass False when the streaming path calls
        `observe_inter_token` for every token instead."""
        self._inter_token_from_records = inter_token_from_records
        self.registry = CollectorRegistry(auto_describe=True)
        self._providers: dict[str, StatsProvider] = {}
        self._groups: list[GroupProvider] = []
        self.registry.register(_EngineStatsCollector(self._providers, self._groups))
        labels = ["model_name"]
        self.prompt_tokens = Counter("firebox:prompt_tokens", "Prompt tokens processed.", labels,
                                     registry=self.registry)
        self.generation_tokens = Counter("firebox:generation_tokens", "Tokens generated.", labels,
                                         registry=self.registry)
        self.request_success = Counter("firebox:request_success", "Finished requests by finish reason.",
                                       ["model_name", "finished_reason"], registry=self.registry)
        self.http_requests = Counter("firebox:http_requests", "Requests by HTTP status code.",
                                     ["model_name", "status"], registry=self.registry)
        self.time_to_first_token = Histogram("firebox:time_to_first_token_seconds", "Time to first token.",
                                             labels, buckets=_TTFT_BUCKETS, registry=self.registry)
        self.inter_token_latency = Histogram("firebox:inter_token_latency_seconds", "Time between tokens.",
                                             labels, buckets=_ITL_BUCKETS, registry=self.registry)
        self.e2e_request_latency = Histogram("firebox:e2e_request_latency_seconds", "End-to-end latency.",
                                             labels, buckets=_E2E_BUCKETS, registry=self.registry)

    def add_engine(self, model_name: str, stats: StatsProvider) -> None:
        """Register a model's stats source and create its series at zero, so they show up at once."""
        self._providers[model_name] = stats
        for metric in (self.prompt_tokens, self.generation_tokens, self.time_to_first_token,
                       self.inter_token_latency, self.e2e_request_latency):
            metric.labels(model_name=model_name)
        for reason in FINISH_REASONS:
            self.request_success.labels(model_name=model_name, finished_reason=reason)

    def add_engines(self, stats: GroupProvider) -> None:
        """Register a source of engines that come and go (deployment replicas): at each scrape,
        their stats by model name."""
        self._groups.append(stats)

    def observe_request(self, record: RequestRecord) -> None:
        """Count a finished request."""
        model = record.model
        self.observe_status(model, record.status_code)
        if record.status_code >= 400:
            return
        self.prompt_tokens.labels(model_name=model).inc(record.prompt_tokens)
        self.generation_tokens.labels(model_name=model).inc(record.completion_tokens)
        reason = "abort" if record.aborted else (record.finish_reason or "stop")
        self.request_success.labels(model_name=model, finished_reason=reason).inc()
        if record.ttft_s is not None:
            self.time_to_first_token.labels(model_name=model).observe(record.ttft_s)
        self.e2e_request_latency.labels(model_name=model).observe(record.latency_s)
        if self._inter_token_from_records:
            self._observe_mean_inter_token(record)

    def _observe_mean_inter_token(self, record: RequestRecord) -> None:
        """One observation per gap between generated tokens, each the request's mean gap."""
        num_gaps = record.completion_tokens - 1
        if num_gaps < 1 or record.ttft_s is None:
            return
        mean_gap = max(0.0, record.latency_s - record.ttft_s) / num_gaps
        histogram = self.inter_token_latency.labels(model_name=record.model)
        for _ in range(num_gaps):
            histogram.observe(mean_gap)

    def observe_status(self, model_name: str, status_code: int) -> None:
        """Count a response by status, also for requests refused before serving (401, 429)."""
        self.http_requests.labels(model_name=model_name, status=str(status_code)).inc()

    def observe_inter_token(self, model_name: str, seconds: float) -> None:
        self.inter_token_latency.labels(model_name=model_name).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """Exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
