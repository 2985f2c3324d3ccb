"""Deployments on Ray Serve (issue 15): a firebox server whose deployment replicas run on a local Ray
cluster started here, driven through the `fireworks-ai` and `openai` SDKs.

The cluster is one node on this machine (2 CPUs, a small object store, no dashboard), shared by
the module's tests and shut down after them. Replicas run the fake engine core of
`fake_replica.py` (no torch, sub-second starts). Which replica served a request comes from the
replicas' own counters (`RayDeployment.served`, from each stream's `ReplicaTag`), never timing.
Skipped, saying so, only where `ray[serve]` is not installed (`pip install 'firebox[ray]'`).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from firebox.config import DeploymentConfig, EngineConfig, SchedulerConfig, ServerConfig
from firebox.serving.deployments.policy import AutoscalingPolicy
from firebox.serving.deployments.ray_options import app_name, autoscaling_config, deployment_options
from tests.conftest import wait_until
from tests.deployments.conftest import DeploymentServer, deployment_server

HAS_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.serve") is not None
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray[serve] is not installed: pip install 'firebox[ray]'")
SMOL = "accounts/fireworks/models/smollm2-135m-instruct"
POLICY = {"scaleUpWindow": "0.5s", "scaleDownWindow": "1h", "scaleToZeroWindow": "1h"}
REPO = Path(__file__).resolve().parents[2]


# --- the mapping onto Ray Serve's options (no cluster) --------------------------------------------


@dataclass(frozen=True)
class _Spec:  # the fields of DeploymentSpec that the mapping reads
    account_id: str = "acme"
    deployment_id: str = "d1"
    min_replica_count: int = 0
    max_replica_count: int = 3
    policy: AutoscalingPolicy = AutoscalingPolicy.from_api(
        {"scaleUpWindow": "5s", "scaleDownWindow": "2m", "scaleToZeroWindow": "1h", "loadTargets": {"default": 0.5}}
    )
    config: EngineConfig = EngineConfig(scheduler=SchedulerConfig(max_num_seqs=8))


def test_the_autoscaling_fields_map_onto_ray_serves_autoscaling_config() -> None:
    assert autoscaling_config(_Spec(), desired=2) == {
        "min_replicas": 0, "max_replicas": 3, "initial_replicas": 2, "upscale_delay_s": 5.0,
        "downscale_delay_s": 120.0, "downscale_to_zero_delay_s": 3600.0, "target_ongoing_requests": 4.0,
    }  # fmt: skip
    assert autoscaling_config(_Spec(), desired=9)["initial_replicas"] == 3  # within the bounds


def test_the_deployment_options_name_the_router_and_the_resources() -> None:
    settings = DeploymentConfig(prefix_affinity_tokens=16, affinity_slack=2)
    options = deployment_options(_Spec(), 1, settings)
    assert options["request_router_config"] == {
        "request_router_class": "firebox.serving.deployments.ray_router:PrefixAffinityRouter",
        "request_router_kwargs": {"prefix_affinity_tokens": 16, "affinity_slack": 2},
    }
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0} and options["max_ongoing_requests"] == 16
    assert options["autoscaling_config"] == autoscaling_config(_Spec(), 1)
    assert app_name(_Spec()) == "firebox.acme.d1"


def test_the_ray_address_flag_reaches_the_server_config_and_picks_the_ray_backend(monkeypatch) -> None:
    from typer.testing import CliRunner

    from firebox import cli

    seen: list[ServerConfig] = []
    monkeypatch.setattr(cli, "run_server", lambda config, *_: seen.append(config))
    result = CliRunner().invoke(cli.app, ["serve", "--ray-address", "auto"])
    assert result.exit_code == 0, result.output
    assert seen[0].ray_address == "auto"
    if HAS_RAY:
        from firebox.cli_catalog import _default_backend

        assert type(_default_backend(seen[0])).__name__ == "RayServeBackend"  # connects only when used


@needs_ray
def test_the_ray_router_runs_the_local_routers_policy() -> None:
    import asyncio

    from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID

    from firebox.engine.types import EngineRequest, SamplingParams
    from firebox.serving.deployments.ray_router import PrefixAffinityRouter
    from firebox.serving.deployments.router import affinity_key, pick_replica

    deployment = DeploymentID("FireboxReplica", "firebox.acme.d1")

    @dataclass
    class Running:  # what the router reads of Ray's RunningReplica
        replica_id: ReplicaID

    async def choose(request: EngineRequest, loads: dict[str, int]) -> list[list[str]]:
        router = PrefixAffinityRouter(deployment, DeploymentHandleSource.UNKNOWN)
        router.initialize_state(prefix_affinity_tokens=4, affinity_slack=1)
        replicas = [Running(ReplicaID(name, deployment)) for name in loads]
        for replica in replicas:
            router.replica_queue_len_cache.update(replica.replica_id, loads[replica.replica_id.unique_id])
        ranks = await router.choose_replicas(replicas, _Pending([request]))
        return [[r.replica_id.unique_id for r in rank] for rank in ranks]

    @dataclass
    class _Pending:
        args: list[Any]

    @dataclass
    class View:
        replica_id: str
        num_outstanding: int
        is_routable: bool = True

    request = EngineRequest("r1", (5, 6, 7, 8, 9), SamplingParams(), 0.0)
    idle = {"a": 0, "b": 0, "c": 0}
    affine = pick_replica([View(n, 0) for n in idle], affinity_key(request, 4), 1).replica_id
    ranks = asyncio.run(choose(request, idle))
    assert ranks[0] == [affine] and sorted(ranks[1]) == sorted(set(idle) - {affine})
    busy = {**idle, affine: 2}  # beyond the slack: the least loaded takes it
    assert asyncio.run(choose(request, busy))[0] != [affine]


# --- a local Ray cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray
    from ray import serve

    # Keep every Ray connection on the loopback: by default Ray binds its node to the machine's
    # own network address, and this test talks to nothing but 127.0.0.1. Ray reads this switch
    # (meant for single-machine clusters) when it picks the node's address.
    from ray._private import ray_constants

    loopback_only = pytest.MonkeyPatch()
    loopback_only.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's own processes
    loopback_only.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # this one: read at import
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             namespace="firebox", runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # fmt: skip
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address
        yield address
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            loopback_only.undo()


@pytest.fixture(scope="module")
def ray_server(ray_address: str, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[DeploymentServer]:
    from firebox.serving.deployments.ray_backend import RayServeBackend
    from tests.deployments.conftest import CATALOG
    from tests.deployments.slow_replica import build_slow_fake_core

    folder = tmp_path_factory.mktemp("ray-server")
    catalog = folder / "catalog.toml"
    catalog.write_text(CATALOG.format(tiny=tiny_model_dir / "config.json"))
    backend = RayServeBackend(ray_address, build=build_slow_fake_core, poll_s=0.2)
    settings = DeploymentConfig(cold_start_timeout_s=120, replica_stop_timeout_s=2)
    with deployment_server(folder / "data", catalog, settings=settings, backend=backend) as server:
        yield server


@pytest.fixture
def server(ray_server: DeploymentServer) -> Iterator[DeploymentServer]:
    """The module's server; the test's deployments are deleted after it (2 CPUs hold 2 replicas)."""
    yield ray_server
    fw = ray_server.fireworks()
    for deployment in fw.deployments.list():
        fw.deployments.delete(deployment.name.rsplit("/", 1)[-1], hard=True)
    assert wait_until(lambda: not any(a.startswith("firebox.") for a in _ray_apps()), timeout=60)


def _ray_apps() -> set[str]:
    from ray import serve

    return set(serve.status().applications)


def _ready(server: DeploymentServer, name: str, count: int, timeout: float = 90) -> Any:
    live = server.live(name)
    assert wait_until(lambda: live.counts().ready == count and live.state == "READY", timeout=timeout), (
        live.counts(), live.state, live.status)  # fmt: skip
    return live


def _deploy(server: DeploymentServer, deployment_id: str, low: int, high: int, ready: int) -> Any:
    """Create a deployment through the SDK; its `RayDeployment` once `ready` replicas run."""
    server.fireworks().deployments.create(base_model=SMOL, deployment_id=deployment_id, min_replica_count=low,
                                          max_replica_count=high, autoscaling_policy=POLICY)
    return _ready(server, f"accounts/fireworks/deployments/{deployment_id}", ready)


def _complete(server: DeploymentServer, name: str, prompt: str, **extra: Any) -> Any:
    return server.openai().completions.with_raw_response.create(model=name, prompt=prompt, max_tokens=3,
                                                                extra_body=extra or None)  # fmt: skip


@needs_ray
def test_two_replicas_on_ray_both_serve_and_affinity_keeps_a_key_on_one(server: DeploymentServer) -> None:
    name = "accounts/fireworks/deployments/on-ray"
    fw = server.fireworks()
    created = fw.deployments.create(base_model=SMOL, deployment_id="on-ray", min_replica_count=0,
                                    max_replica_count=2, autoscaling_policy=POLICY)
    assert created.state == "CREATING"
    fw.deployments.scale("on-ray", replica_count=2)
    live = _ready(server, name, 2)
    assert "firebox.fireworks.on-ray" in _ray_apps()
    assert fw.deployments.get("on-ray").replica_stats.ready_replica_count == 2

    for i in range(12):  # different leading tokens: spread by rendezvous hashing
        answer = _complete(server, name, f"{i} {i * 7} {i * 13} distinct prompt number {i}")
        assert answer.parse().usage.completion_tokens == 3
        assert answer.headers["fireworks-deployment"] == name
    running = {r.replica_id for r in live.replicas if r.state == "RUNNING"}
    assert set(live.served) == running and all(live.served[r] >= 1 for r in running), live.served

    before = dict(live.served)
    hosts = {_complete(server, name, f"other words {i}", user="alice").headers["fireworks-backend-host"]
             for i in range(6)}  # fmt: skip
    grown = {r for r in live.served if live.served[r] > before.get(r, 0)}
    assert len(hosts) == 1 and len(grown) == 1  # one key, one replica (nothing else is in flight)


@needs_ray
def test_scaled_to_zero_on_ray_a_request_wakes_it(server: DeploymentServer) -> None:
    name = "accounts/fireworks/deployments/sleepy"
    fw = server.fireworks()
    live = _deploy(server, "sleepy", 0, 2, ready=1)
    fw.deployments.scale("sleepy", replica_count=0)
    assert wait_until(lambda: not live.replicas and live.desired == 0, timeout=60), live.replicas
    assert fw.deployments.get("sleepy").replica_stats.ready_replica_count == 0

    answer = _complete(server, name, "wake up")  # Ray scales it up and the request waits for it
    assert answer.parse().usage.completion_tokens == 3
    assert float(answer.headers["fireworks-deployment-cold-start-duration"]) > 0
    fw.deployments.scale("sleepy", replica_count=2)
    _ready(server, name, 2)
    assert fw.deployments.get("sleepy").desired_replica_count == 2


@needs_ray
def test_a_client_that_goes_away_aborts_its_request_in_the_replica(server: DeploymentServer) -> None:
    name = "accounts/fireworks/deployments/quitter"
    _deploy(server, "quitter", 1, 1, ready=1)
    raw = server.openai().completions.with_raw_response.create(
        model=name, prompt="a long story", stream=True, max_tokens=900, extra_body={"ignore_eos": True}
    )
    stream = raw.parse()
    next(iter(stream))  # 900 tokens at 20 ms: it would run for 18 s
    beside = _complete(server, name, "and me")
    assert beside.headers["fireworks-num-concurrent-requests"] == "2"  # the replica's own count
    stream.close()  # the client goes away
    assert wait_until(lambda: _complete(server, name, "alone?").headers["fireworks-num-concurrent-requests"] == "1",
                      timeout=10)  # fmt: skip


@needs_ray
def test_a_killed_replica_actor_fails_its_streams_with_503_and_ray_replaces_it(server: DeploymentServer) -> None:
    import ray

    name = "accounts/fireworks/deployments/fragile"
    live = _deploy(server, "fragile", 2, 2, ready=2)
    client = server.openai()
    stream = client.chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "Hi"}], stream=True, max_tokens=900,
        extra_body={"ignore_eos": True},
    )
    host = stream.headers["fireworks-backend-host"]
    chunks = stream.parse()
    next(iter(chunks))
    victim = next(r for r in live.replicas if r.host == host)
    ray.kill(ray.get_actor(victim.actor_name, namespace="serve"), no_restart=True)

    with pytest.raises(openai.APIError, match="lost"):  # the stream ends with an error event
        for _ in chunks:
            pass
    served: list[int] = []

    def keep_asking(stop: threading.Event) -> None:  # requests go on while Ray replaces the replica
        while not stop.is_set():
            served.append(_complete(server, name, f"still there {len(served)}").parse().usage.completion_tokens)

    stop = threading.Event()
    asker = threading.Thread(target=keep_asking, args=(stop,))
    asker.start()
    try:
        replaced = wait_until(lambda: live.counts().ready == 2 and victim.replica_id not in
                              {r.replica_id for r in live.replicas}, timeout=90)  # fmt: skip
    finally:
        stop.set()
        asker.join(timeout=30)
    assert replaced, live.replicas
    assert served and set(served) == {3}


@needs_ray
def test_deleting_a_deployment_deletes_its_ray_application(server: DeploymentServer) -> None:
    fw = server.fireworks()
    _deploy(server, "brief", 1, 1, ready=1)
    assert "firebox.fireworks.brief" in _ray_apps()
    fw.deployments.delete("brief")
    assert fw.deployments.get("brief").state == "DELETED"
    assert wait_until(lambda: "firebox.fireworks.brief" not in _ray_apps(), timeout=30)
    with pytest.raises(openai.NotFoundError):
        _complete(server, "accounts/fireworks/deployments/brief", "anyone?")
