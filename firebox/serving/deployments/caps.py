"""This server's limits on deployments (`DeploymentConfig`): replicas per deployment (a 400 over
it), deployments per account and the replicas every deployment keeps running together, its
minReplicaCount, against `--max-replicas` (429s). Stored deployments loaded at start-up are held
to the same limits (`held_to_caps`), so that a deployment stored before them cannot start a storm
of replicas at every restart."""

from __future__ import annotations

import dataclasses

from firebox.config import DeploymentConfig
from firebox.platform.deployments import Deployment
from firebox.platform.errors import InvalidArgumentError, ResourceExhaustedError


def check_replica_bounds(record: Deployment, settings: DeploymentConfig) -> None:
    cap = settings.max_replicas_per_deployment
    if record.max_replica_count > cap:  # minReplicaCount <= maxReplicaCount: it is held too
        raise InvalidArgumentError(f"maxReplicaCount {record.max_replica_count} is over this server's limit of "
                                   f"{cap} replicas per deployment")  # fmt: skip


def check_account_room(account_id: str, num_deployments: int, settings: DeploymentConfig) -> None:
    """`num_deployments`: the account's deployments (not deleted) besides the new one."""
    cap = settings.max_deployments_per_account
    if num_deployments >= cap:
        raise ResourceExhaustedError(f"account {account_id} has {num_deployments} deployments, this server's limit "
                                     f"of deployments per account; delete one first")  # fmt: skip


def check_total_floor(record: Deployment, others_floor: int, settings: DeploymentConfig) -> None:
    """`others_floor`: the minReplicaCount of every other running deployment, together."""
    cap = settings.max_replicas
    floor = others_floor + record.min_replica_count
    if cap is not None and record.min_replica_count and floor > cap:
        raise ResourceExhaustedError(f"minReplicaCount {record.min_replica_count} would keep {floor} replicas "
                                     f"running on this server, over its limit of {cap} replicas in total "
                                     f"(--max-replicas)")  # fmt: skip


def held_to_caps(record: Deployment, settings: DeploymentConfig) -> Deployment:
    """`record` with its replica counts cut to the per-deployment limit."""
    cap = settings.max_replicas_per_deployment
    return dataclasses.replace(record, min_replica_count=min(record.min_replica_count, cap),
                               max_replica_count=min(record.max_replica_count, cap),
                               desired_replica_count=min(record.desired_replica_count, cap))  # fmt: skip


def over_account_cap(account_id: str, counts: dict[str, int], settings: DeploymentConfig) -> bool:
    """Counts one more deployment of `account_id` in `counts`; True once past the limit."""
    counts[account_id] = counts.get(account_id, 0) + 1
    return counts[account_id] > settings.max_deployments_per_account
