"""This server's limits on deployments (issue 19, item 2): replicas per deployment (400), deployments
per account and replicas in total (429), each naming the limit; stored deployments loaded at
start-up held to the same limits; replica start-ups in a bounded pool of their own."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx

from firebox.config import DeploymentConfig
from firebox.platform.db import Database
from firebox.platform.deployments import Deployment, DeploymentStore
from tests.conftest import wait_until
from tests.deployments.conftest import ADMIN_KEY, DeploymentServer, deployment_server

SMOL = "accounts/fireworks/models/smollm2-135m-instruct"
STEADY = {"scaleUpWindow": "30s", "scaleDownWindow": "3600s", "scaleToZeroWindow": "3600s"}
CAPS = DeploymentConfig(cold_start_timeout_s=60, restart_backoff_s=0.2, max_replicas=2,
                        max_replicas_per_deployment=3, max_deployments_per_account=2)  # fmt: skip


def _create(server: DeploymentServer, deployment_id: str, **fields: object) -> httpx.Response:
    body = {"baseModel": SMOL, "autoscalingPolicy": STEADY, **fields}
    return httpx.post(f"{server.url}/v1/accounts/fireworks/deployments", json=body, params={"deploymentId":
                      deployment_id}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)  # fmt: skip


def _num_replicas(server: DeploymentServer) -> int:
    """Every replica of the server, running or starting."""
    return sum(len(d.replicas) + d.num_starting for d in server.control.manager)


def test_over_a_limit_is_a_400_or_429_naming_it(tmp_path: Path, catalog_file: Path) -> None:
    with deployment_server(tmp_path / "data", catalog_file, settings=CAPS) as server:
        storm = _create(server, "storm", minReplicaCount=500)
        assert storm.status_code == 400 and "limit of 3 replicas per deployment" in storm.json()["error"]["message"]
        floor = _create(server, "floor", minReplicaCount=3, maxReplicaCount=3)
        assert floor.status_code == 429 and "limit of 2 replicas in total" in floor.json()["error"]["message"]
        assert _create(server, "one", minReplicaCount=1, maxReplicaCount=3).status_code == 200
        assert _create(server, "two", minReplicaCount=0, maxReplicaCount=3).status_code == 200
        third = _create(server, "three", maxReplicaCount=1)
        assert third.status_code == 429 and "has 2 deployments" in third.json()["error"]["message"]
        assert server.live("accounts/fireworks/deployments/storm") is None  # nothing started for the refused

        server.fireworks().deployments.scale("two", replica_count=3)  # wants 3 more: room for 1
        peak = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, _num_replicas(server))
            time.sleep(0.02)
        assert peak <= 2 and server.control.manager.budget.num_held == 2
        assert wait_until(lambda: server.live("accounts/fireworks/deployments/two").counts().ready == 1, timeout=30)


def test_deployments_stored_before_the_limits_are_held_to_them_at_start(tmp_path: Path, catalog_file: Path) -> None:
    data_dir = tmp_path / "data"
    database = Database.open(data_dir, None)
    store = DeploymentStore(database)
    store.create(Deployment("fireworks", "storm", SMOL, min_replica_count=500, max_replica_count=500,
                            desired_replica_count=500, autoscaling_policy=STEADY))  # fmt: skip
    for deployment_id in ("b", "c"):
        store.create(Deployment("fireworks", deployment_id, SMOL, max_replica_count=1))
    database.close()
    with deployment_server(data_dir, catalog_file, settings=CAPS) as server:
        storm = server.live("accounts/fireworks/deployments/storm")
        assert (storm.spec.min_replica_count, storm.spec.max_replica_count) == (3, 3)
        peak = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, _num_replicas(server))
            time.sleep(0.02)
        assert peak <= 2  # --max-replicas holds the total whatever the stored floors say
        stored = server.fireworks().deployments.get("storm")
        assert (stored.min_replica_count, stored.max_replica_count) == (3, 3)  # stored as held
        over = server.fireworks().deployments.get("c")  # the account's third: over its 2
        assert over.state == "FAILED" and "2 deployments per account" in over.status.message
        assert server.live("accounts/fireworks/deployments/c") is None


def test_replica_start_ups_run_in_their_own_bounded_pool(monkeypatch) -> None:
    import firebox.engine.process as process_module
    from firebox.serving.deployments.local_backend import LocalProcessBackend
    from firebox.serving.deployments.replicas import ReplicaSpec

    loading, peak, threads = [0], [0], set()
    lock = threading.Lock()

    class SlowLaunch:
        def wait(self, description=None, timeout=None):
            with lock:
                loading[0] += 1
                peak[0] = max(peak[0], loading[0])
                threads.add(threading.current_thread().name)
            time.sleep(0.1)
            with lock:
                loading[0] -= 1
            return SimpleNamespace(transport=SimpleNamespace(pid=1), shutdown=lambda timeout=None: None)

    monkeypatch.setattr(process_module, "launch_process_engine", lambda config, build=None: SlowLaunch())
    backend = LocalProcessBackend(build=object(), max_concurrent_starts=2)

    default_pool_used = []

    class WatchedPool(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            default_pool_used.append(args)
            return super().submit(*args, **kwargs)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(WatchedPool(1))
        specs = [ReplicaSpec("accounts/a/deployments/d", f"r{i}", None, None) for i in range(6)]
        await asyncio.gather(*(backend.start_replica(spec) for spec in specs))
        assert not default_pool_used

    asyncio.run(main())
    assert peak[0] == 2 and all(name.startswith("firebox-replica-start") for name in threads)
