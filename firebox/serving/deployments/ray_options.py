"""What a firebox deployment asks of Ray Serve: the options of its one Serve deployment.

Plain data, no Ray import (the backend hands it to `serve.deployment(...).options(**...)`):
- autoscaling from the deployment's Fireworks fields, onto Ray Serve's `AutoscalingConfig`;
- resources per replica: `--num-threads` CPUs (1 when unset), one GPU on a CUDA device;
- the request router: `ray_router.PrefixAffinityRouter`, the local router's policy.
Ray Serve versions the deployment from its code and constructor arguments (the engine config):
a new engine config rolls the replicas, a new replica count or window does not.
"""

from __future__ import annotations

from typing import Any

from firebox.config import DeploymentConfig, EngineConfig
from firebox.serving.deployments.spec import DeploymentSpec

SERVE_DEPLOYMENT = "FireboxReplica"  # the one Serve deployment of each firebox deployment's app
ROUTER_CLASS = "firebox.serving.deployments.ray_router:PrefixAffinityRouter"
QUEUE_PER_SLOT = 2  # a replica takes up to 2x its batch slots; the rest wait at the front, for any replica


def app_name(spec: DeploymentSpec) -> str:
    """The Ray Serve application of a deployment (one per deployment, so each scales alone)."""
    return f"firebox.{spec.account_id}.{spec.deployment_id}"


def autoscaling_config(spec: DeploymentSpec, desired: int) -> dict[str, Any]:
    """Ray Serve's autoscaling from the deployment's fields. `initial_replicas` carries the
    desired count: Ray applies it whenever the config changes, which is how a `scale` reaches it
    (Ray's autoscaler moves on from there, as firebox's does locally)."""
    policy = spec.policy
    return {
        "min_replicas": spec.min_replica_count,
        "max_replicas": spec.max_replica_count,
        "initial_replicas": min(max(desired, spec.min_replica_count), spec.max_replica_count),
        "upscale_delay_s": policy.scale_up_window_s,
        "downscale_delay_s": policy.scale_down_window_s,
        "downscale_to_zero_delay_s": policy.scale_to_zero_window_s,
        "target_ongoing_requests": policy.concurrency_target(spec.config.scheduler.max_num_seqs),
    }


def actor_options(config: EngineConfig) -> dict[str, Any]:
    """What Ray reserves for one replica on a node."""
    device = config.device
    return {"num_cpus": device.num_threads or 1, "num_gpus": 1 if device.device.startswith("cuda") else 0}


def deployment_options(spec: DeploymentSpec, desired: int, settings: DeploymentConfig) -> dict[str, Any]:
    """Everything `serve.deployment(FireboxReplica).options(...)` takes for `spec`."""
    return {
        "name": SERVE_DEPLOYMENT,
        "max_ongoing_requests": QUEUE_PER_SLOT * spec.config.scheduler.max_num_seqs,
        "autoscaling_config": autoscaling_config(spec, desired),
        "ray_actor_options": actor_options(spec.config),
        "request_router_config": {
            "request_router_class": ROUTER_CLASS,
            "request_router_kwargs": {"prefix_affinity_tokens": settings.prefix_affinity_tokens,
                                      "affinity_slack": settings.affinity_slack},
        },
        "graceful_shutdown_timeout_s": settings.replica_stop_timeout_s,
    }
