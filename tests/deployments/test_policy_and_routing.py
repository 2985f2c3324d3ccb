"""The pure parts: durations and autoscaling policies, the autoscaler's windows, the router's
choice (least outstanding, affinity, rendezvous stability) and the TOML catalog."""

from __future__ import annotations

import time

import pytest

from firebox.catalog import catalog_from_engines, parse_catalog
from firebox.config import EngineConfig, EngineOptions, ModelConfig
from firebox.engine.types import EngineRequest, SamplingParams
from firebox.serving.deployments.autoscaler import LoadSample, ScaleBounds, ScaleState, decide
from firebox.serving.deployments.policy import AutoscalingPolicy, format_duration, parse_duration
from firebox.serving.deployments.replicas import Replica
from firebox.serving.deployments.router import affinity_key, pick_replica


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("0.5s", 0.5), ("10m", 600), ("1h30m", 5400),
                                               ("250ms", 0.25), (2, 2.0), ("600s", 600)])  # fmt: skip
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(parse_duration(text))) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10", "5 m", "-1s", "1d"])
def test_bad_durations(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_policy_from_and_to_the_api() -> None:
    policy = AutoscalingPolicy.from_api({"scaleUpWindow": "1s", "loadTargets": {"concurrent_requests": 3}})
    assert (policy.scale_up_window_s, policy.scale_down_window_s, policy.scale_to_zero_window_s) == (1, 600, 3600)
    assert policy.concurrency_target(max_num_seqs=64) == 3
    assert AutoscalingPolicy().concurrency_target(max_num_seqs=10) == 8  # default: 0.8 of the batch slots
    assert AutoscalingPolicy.from_api(policy.to_api()) == policy
    for bad in ({"scaleUpWindow": "2h"}, {"loadTargets": {"default": 1.5}}, {"loadTargets": {"rps": 1}},
                {"scaleInWindow": "1s"}):  # fmt: skip
        with pytest.raises(ValueError):
            AutoscalingPolicy.from_api(bad)


POLICY = AutoscalingPolicy(scale_up_window_s=1, scale_down_window_s=2, scale_to_zero_window_s=5)
BOUNDS = ScaleBounds(min_replicas=0, max_replicas=3, target_concurrency=2)


def test_scale_up_only_after_the_load_lasts_a_whole_window() -> None:
    state = ScaleState()
    assert decide(POLICY, BOUNDS, 1, LoadSample(10.0, 5, 10.0), state) == 1  # needs 3, since now
    assert decide(POLICY, BOUNDS, 1, LoadSample(10.5, 5, 10.5), state) == 1
    assert decide(POLICY, BOUNDS, 1, LoadSample(10.8, 2, 10.8), state) == 1  # the load dropped: window reset
    assert decide(POLICY, BOUNDS, 1, LoadSample(11.0, 9, 11.0), state) == 1
    assert decide(POLICY, BOUNDS, 1, LoadSample(12.0, 9, 12.0), state) == 3  # capped at max_replicas


def test_scale_down_to_one_then_to_zero_when_idle() -> None:
    state = ScaleState()
    assert decide(POLICY, BOUNDS, 3, LoadSample(20.0, 1, 20.0), state) == 3
    assert decide(POLICY, BOUNDS, 3, LoadSample(22.0, 0, 20.0), state) == 1  # under target for 2 s
    assert decide(POLICY, BOUNDS, 1, LoadSample(24.0, 0, 20.0), state) == 1  # idle 4 s < 5 s
    assert decide(POLICY, BOUNDS, 1, LoadSample(25.0, 0, 20.0), state) == 0
    floor = ScaleBounds(min_replicas=1, max_replicas=3, target_concurrency=2)
    assert decide(POLICY, floor, 1, LoadSample(99.0, 0, 20.0), ScaleState()) == 1  # never below the minimum


class _Engine:
    is_alive = True


def _replicas(*loads: int) -> list[Replica]:
    return [Replica(f"r{i}", f"host-{i}", _Engine(), num_outstanding=n) for i, n in enumerate(loads)]


def _request(prompt: list[int], key: str | None = None) -> EngineRequest:
    return EngineRequest("r", tuple(prompt), SamplingParams(), time.monotonic(), affinity_key=key)


def test_least_outstanding_without_affinity_and_never_a_draining_replica() -> None:
    replicas = _replicas(3, 1, 2)
    assert pick_replica(replicas, None, slack=4).replica_id == "r1"
    replicas[1].is_draining = True
    assert pick_replica(replicas, None, slack=4).replica_id == "r2"
    assert pick_replica([], None, slack=4) is None


def test_affinity_sticks_while_the_replica_is_not_overloaded() -> None:
    replicas = _replicas(0, 0, 0)
    key = affinity_key(_request([1, 2, 3], key="alice"), 32)
    home = pick_replica(replicas, key, slack=2)
    assert all(pick_replica(replicas, key, slack=2) is home for _ in range(5))
    home.num_outstanding = 2
    assert pick_replica(replicas, key, slack=2) is home
    home.num_outstanding = 3  # more than the least loaded + slack: the request goes elsewhere
    assert pick_replica(replicas, key, slack=2) is not home
    # rendezvous hashing: removing another replica does not move the key
    others = [r for r in replicas if r is not home]
    home.num_outstanding = 0
    assert pick_replica([home, others[0]], key, slack=2) is home


def test_affinity_keys_come_from_the_request_or_its_leading_tokens() -> None:
    shared = [7] * 40
    assert affinity_key(_request(shared + [1]), 32) == affinity_key(_request(shared + [2]), 32)
    assert affinity_key(_request([1] + shared), 32) != affinity_key(_request(shared), 32)
    assert affinity_key(_request(shared, key="bob"), 32) == affinity_key(_request([5], key="bob"), 32)
    keys = {affinity_key(_request([i, 9, 9]), 32) for i in range(50)}
    homes = {pick_replica(_replicas(0, 0), key, slack=100).replica_id for key in keys}
    assert homes == {"r0", "r1"}  # different prefixes spread over the replicas


def test_the_catalog_file_format() -> None:
    catalog = parse_catalog({"models": [
        {"id": "smol", "max_model_len": 512, "default_sampling": {"temperature": 0.3},
         "deployments": [{"id": "d", "min_replica_count": 2, "autoscaling_policy": {"scale_up_window": "5s"}}]},
        {"id": "mine", "account": "acme", "source": "dummy:/x", "serverless": False},
    ]})  # fmt: skip
    smol, mine = catalog.models
    assert smol.name == "accounts/fireworks/models/smol" and smol.is_public and not mine.is_public
    config = smol.engine_config(EngineOptions())
    assert config.model.max_model_len == 512 and config.model.generation_overrides == (("temperature", 0.3),)
    deployment = smol.deployments[0]
    assert (deployment.account, deployment.max_replica_count) == ("fireworks", 2)
    assert deployment.autoscaling_policy == {"scaleUpWindow": "5s"}
    for bad in ({"models": []}, {"models": [{"source": "default"}]}, {"models": [{"id": "a", "colour": "red"}]},
                {"models": [{"id": "a"}, {"id": "a"}]}, {"models": [{"id": "a", "dtype": "float8"}]},
                {"models": [{"id": "a", "default_sampling": {"max_tokens": 5}}]}):  # fmt: skip
        with pytest.raises(ValueError):
            parse_catalog(bad)
    flags = catalog_from_engines([EngineConfig(model=ModelConfig(name="accounts/me/models/x", source="/m.gguf"))])
    assert [(m.name, m.source, m.serverless) for m in flags.models] == [("accounts/me/models/x", "/m.gguf", True)]
