"""Deployment replicas report the gauges serverless models have (issue 19, item 14): requests
running and waiting and the KV-cache usage, under `<base model>#<deployment>`, shown to the
deployment's own account and admins only."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.deployments.conftest import ADMIN_KEY, DeploymentServer

SMOL = "accounts/fireworks/models/smollm2-135m-instruct"
NAME = "accounts/fireworks/deployments/gauged"
LABEL = f"{SMOL}#{NAME}"


def _gauges(server: DeploymentServer, key: str | None) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    text = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10).text
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.labels.get("model_name") == LABEL}  # fmt: skip


def test_replicas_report_running_waiting_and_kv_gauges(server: DeploymentServer) -> None:
    server.fireworks().deployments.create(base_model=SMOL, deployment_id="gauged", min_replica_count=1)
    assert wait_until(lambda: server.live(NAME).counts().ready == 1, timeout=30)
    assert _gauges(server, ADMIN_KEY)["firebox:num_requests_running"] == 0

    stream = server.openai().chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}],
                                                     stream=True, max_tokens=5000, extra_body={"ignore_eos": True})
    next(iter(stream))
    gauges = _gauges(server, ADMIN_KEY)
    assert gauges["firebox:num_requests_running"] == 1 and gauges["firebox:num_requests_waiting"] == 0
    assert 0 < gauges["firebox:kv_cache_usage"] <= 1
    stream.close()

    assert _gauges(server, server.account_key("rival")) == {} and _gauges(server, None) == {}  # deployments are private
    assert wait_until(lambda: _gauges(server, ADMIN_KEY)["firebox:num_requests_running"] == 0, timeout=10)
