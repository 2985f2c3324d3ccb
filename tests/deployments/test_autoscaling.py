"""Autoscaling under a scripted load: from zero to two replicas and back, with sub-second windows;
and a request to a deployment at zero replicas waiting for its cold start."""

from __future__ import annotations

import threading
from pathlib import Path

from firebox.config import DeploymentConfig
from tests.conftest import wait_until
from tests.deployments.conftest import deployment_server

SMOL = "accounts/fireworks/models/smollm2-135m-instruct"
NAME = "accounts/fireworks/deployments/auto"
POLICY = {"scaleUpWindow": "0.3s", "scaleDownWindow": "0.6s", "scaleToZeroWindow": "1.5s",
          "loadTargets": {"concurrent_requests": 1}}  # fmt: skip


class _DesiredCounts:
    """Polls the deployment's desired replica count from a thread; keeps each change."""

    def __init__(self, server) -> None:
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(server,), daemon=True)

    def _poll(self, server) -> None:
        while not self._stop.wait(0.01):
            live = server.live(NAME)
            if live is not None and (not self.seen or self.seen[-1] != live.desired):
                self.seen.append(live.desired)

    def __enter__(self) -> _DesiredCounts:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _load(server, num_clients: int, stop: threading.Event, hosts: set[str], cold_starts: list[float]) -> list:
    """Clients sending completions back to back, each with its own `user` (affinity key)."""

    def client(index: int) -> None:
        api = server.openai()
        while not stop.is_set():
            raw = api.completions.with_raw_response.create(
                model=NAME, prompt=f"client {index} says", max_tokens=150, user=f"user-{index}",
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            hosts.add(raw.headers["fireworks-backend-host"])
            if "fireworks-deployment-cold-start-duration" in raw.headers:
                cold_starts.append(float(raw.headers["fireworks-deployment-cold-start-duration"]))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(num_clients)]
    for thread in threads:
        thread.start()
    return threads


def test_scales_from_zero_to_two_replicas_under_load_and_back_to_zero(tmp_path: Path, catalog_file: Path) -> None:
    settings = DeploymentConfig(cold_start_timeout_s=60, restart_backoff_s=0.2, affinity_slack=0)
    with deployment_server(tmp_path / "data", catalog_file, settings=settings) as server, \
            _DesiredCounts(server) as desired:  # fmt: skip
        fw = server.fireworks()
        fw.deployments.create(base_model=SMOL, deployment_id="auto", min_replica_count=0, max_replica_count=2,
                              autoscaling_policy=POLICY)
        assert wait_until(lambda: desired.seen[-1:] == [0] and not server.live(NAME).replicas, timeout=30)

        stop, hosts, cold_starts = threading.Event(), set(), []
        clients = _load(server, 4, stop, hosts, cold_starts)
        try:
            assert wait_until(lambda: len(hosts) == 2, timeout=60), desired.seen  # both replicas served
            peak = fw.deployments.get("auto")
            assert peak.desired_replica_count == 2 and peak.replica_stats.ready_replica_count == 2
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=30)

        assert wait_until(lambda: desired.seen[-1] == 0 and not server.live(NAME).replicas, timeout=30)
        idle = fw.deployments.get("auto")
        assert (idle.state, idle.replica_count, idle.desired_replica_count) == ("READY", 0, 0)
    assert desired.seen[:4] == [1, 0, 1, 2]  # created; idle to zero; cold start; the load needs two
    assert desired.seen[-1] == 0 and set(desired.seen[4:]) <= {1, 0}  # then down (to one, then zero when idle)
    assert cold_starts and all(wait > 0 for wait in cold_starts)  # the first requests waited, then were served


def test_a_request_at_zero_replicas_waits_for_the_cold_start(server) -> None:
    fw = server.fireworks()
    fw.deployments.create(base_model=SMOL, deployment_id="auto", max_replica_count=1, autoscaling_policy=POLICY)
    fw.deployments.scale("auto", replica_count=0)
    assert wait_until(lambda: not server.live(NAME).replicas and server.live(NAME).num_starting == 0, timeout=30)
    raw = server.openai().chat.completions.with_raw_response.create(
        model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        extra_body={"perf_metrics_in_response": True},
    )  # fmt: skip
    waited = float(raw.headers["fireworks-deployment-cold-start-duration"])
    assert waited > 0 and raw.parse().usage.completion_tokens == 3
    metrics = raw.parse().model_extra["perf_metrics"]
    assert metrics["deployment-cold-start-duration"] == waited and metrics["deployment"] == NAME
    assert float(raw.headers["fireworks-server-time-to-first-token"]) >= waited  # the wait is in the latency


def test_a_cold_start_longer_than_the_timeout_is_a_503_scaling_up(tmp_path: Path, catalog_file: Path) -> None:
    import openai
    import pytest

    settings = DeploymentConfig(cold_start_timeout_s=0.05)  # a replica takes longer than that to start
    with deployment_server(tmp_path / "data", catalog_file, settings=settings) as server:
        server.fireworks().deployments.create(base_model=SMOL, deployment_id="auto", autoscaling_policy=POLICY)
        server.fireworks().deployments.scale("auto", replica_count=0)
        assert wait_until(lambda: not server.live(NAME).replicas and server.live(NAME).num_starting == 0, timeout=30)
        with pytest.raises(openai.APIStatusError) as refused:
            server.openai().completions.create(model=NAME, prompt="x", max_tokens=1)
        assert refused.value.status_code == 503 and refused.value.body["code"] == "DEPLOYMENT_SCALING_UP"
        assert wait_until(lambda: server.live(NAME).counts().ready == 1, timeout=30)  # it did scale up
        assert server.openai().completions.create(model=NAME, prompt="x", max_tokens=1).usage.completion_tokens == 1
