"""`DeploymentSpec`: what the replica manager needs to run one deployment."""

from __future__ import annotations

from dataclasses import dataclass

from firebox.config import EngineConfig
from firebox.engine.describe import ModelDescription
from firebox.serving.deployments.policy import AutoscalingPolicy


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    account_id: str
    deployment_id: str
    base_model: str  # accounts/<a>/models/<id>
    min_replica_count: int
    max_replica_count: int
    desired_replica_count: int
    policy: AutoscalingPolicy
    config: EngineConfig  # what each replica runs
    description: ModelDescription  # model info and tokenizer, known without a replica
    state: str = "CREATING"  # as stored: CREATING, READY or FAILED

    @property
    def name(self) -> str:
        return f"accounts/{self.account_id}/deployments/{self.deployment_id}"

    def __post_init__(self) -> None:
        if not 0 <= self.min_replica_count <= self.max_replica_count:
            raise ValueError("replica counts must satisfy 0 <= minReplicaCount <= maxReplicaCount")
