"""Prometheus exposition: every contract name, labelled model_name, fed from records and stats."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.testclient import TestClient
from platform_helpers import request_record
from prometheus_client.parser import text_string_to_metric_families

from firebox.api.routes.metrics import metrics_router
from firebox.platform.prometheus import PlatformMetrics

MODEL = "accounts/fireworks/models/tiny"
CONTRACT = {
    "firebox:prompt_tokens": "counter", "firebox:generation_tokens": "counter",
    "firebox:request_success": "counter", "firebox:prefix_cache_queries": "counter",
    "firebox:prefix_cache_hits": "counter", "firebox:num_requests_running": "gauge",
    "firebox:num_requests_waiting": "gauge", "firebox:kv_cache_usage": "gauge",
    "firebox:time_to_first_token_seconds": "histogram", "firebox:inter_token_latency_seconds": "histogram",
    "firebox:e2e_request_latency_seconds": "histogram",
}


@dataclass
class Stats:
    num_running: int = 3
    num_waiting: int = 5
    kv_cache_usage: float = 0.25
    prefix_cache_queries: int = 1000
    prefix_cache_hits: int = 400


def _scrape(metrics: PlatformMetrics) -> dict[str, dict[tuple, float]]:
    app = FastAPI()
    app.include_router(metrics_router(metrics))
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name not in samples
        samples[family.name] = {}
        for sample in family.samples:
            samples[family.name][(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        samples[family.name]["type"] = family.type
    return samples


def _value(samples, family: str, sample: str, **labels) -> float:
    return samples[family][(sample, tuple(sorted({"model_name": MODEL, **labels}.items())))]


def test_every_contract_family_is_exposed_with_model_name() -> None:
    metrics = PlatformMetrics()
    metrics.add_engine(MODEL, Stats)
    samples = _scrape(metrics)
    for name, kind in CONTRACT.items():
        assert samples[name]["type"] == kind, name
        labelled = [labels for key in samples[name] if key != "type" for _, labels in [key]]
        assert labelled and all(("model_name", MODEL) in labels for labels in labelled), name


def test_values_come_from_records_and_engine_stats() -> None:
    metrics = PlatformMetrics(inter_token_from_records=False)
    metrics.add_engine(MODEL, Stats)
    metrics.observe_request(request_record("a", model=MODEL, prompt_tokens=11, completion_tokens=5, ttft_s=0.03,
                                           latency_s=0.7, finish_reason="length"))
    metrics.observe_request(request_record("b", model=MODEL, prompt_tokens=4, completion_tokens=2, aborted=True,
                                           status_code=200))
    metrics.observe_request(request_record("c", model=MODEL, prompt_tokens=9, status_code=400))
    metrics.observe_status(MODEL, 429)
    for seconds in (0.01, 0.02, 0.5):
        metrics.observe_inter_token(MODEL, seconds)
    samples = _scrape(metrics)
    assert _value(samples, "firebox:prompt_tokens", "firebox:prompt_tokens_total") == 15
    assert _value(samples, "firebox:generation_tokens", "firebox:generation_tokens_total") == 7
    success = "firebox:request_success_total"
    assert _value(samples, "firebox:request_success", success, finished_reason="length") == 1
    assert _value(samples, "firebox:request_success", success, finished_reason="abort") == 1
    assert _value(samples, "firebox:request_success", success, finished_reason="stop") == 0
    for status, count in (("200", 2), ("400", 1), ("429", 1)):
        assert _value(samples, "firebox:http_requests", "firebox:http_requests_total", status=status) == count
    itl = "firebox:inter_token_latency_seconds"
    assert _value(samples, itl, itl + "_count") == 3
    assert _value(samples, itl, itl + "_sum") == 0.53
    ttft = "firebox:time_to_first_token_seconds"
    assert _value(samples, ttft, ttft + "_count") == 1
    assert _value(samples, ttft, ttft + "_bucket", le="0.04") == 1
    assert _value(samples, ttft, ttft + "_bucket", le="0.02") == 0
    assert _value(samples, "firebox:e2e_request_latency_seconds", "firebox:e2e_request_latency_seconds_sum") == 0.7
    assert _value(samples, "firebox:num_requests_running", "firebox:num_requests_running") == 3
    assert _value(samples, "firebox:num_requests_waiting", "firebox:num_requests_waiting") == 5
    assert _value(samples, "firebox:kv_cache_usage", "firebox:kv_cache_usage") == 0.25
    assert _value(samples, "firebox:prefix_cache_queries", "firebox:prefix_cache_queries_total") == 1000
    assert _value(samples, "firebox:prefix_cache_hits", "firebox:prefix_cache_hits_total") == 400


def test_inter_token_latency_derived_from_records() -> None:
    metrics = PlatformMetrics()
    metrics.add_engine(MODEL, Stats)
    metrics.observe_request(request_record("a", model=MODEL, completion_tokens=5, ttft_s=0.1, latency_s=0.5))
    metrics.observe_request(request_record("b", model=MODEL, completion_tokens=1, ttft_s=0.1, latency_s=0.1))
    samples = _scrape(metrics)
    itl = "firebox:inter_token_latency_seconds"
    assert _value(samples, itl, itl + "_count") == 4  # 4 gaps between 5 tokens; 1 token has none
    assert abs(_value(samples, itl, itl + "_sum") - 0.4) < 1e-9
    assert _value(samples, itl, itl + "_bucket", le="0.075") == 0
    assert _value(samples, itl, itl + "_bucket", le="0.1") == 4


def test_registries_are_independent_and_a_failing_engine_does_not_break_scrapes() -> None:
    first, second = PlatformMetrics(), PlatformMetrics()
    first.observe_request(request_record("a", model=MODEL, prompt_tokens=3))

    def broken() -> Stats:
        raise RuntimeError("engine died")

    second.add_engine("accounts/fireworks/models/dead", broken)
    second.add_engine(MODEL, Stats)
    samples = _scrape(second)
    assert _value(samples, "firebox:prompt_tokens", "firebox:prompt_tokens_total") == 0
    assert _value(samples, "firebox:num_requests_running", "firebox:num_requests_running") == 3
