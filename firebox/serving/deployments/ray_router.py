"""`PrefixAffinityRouter`: the Ray Serve request router of firebox deployments.

It runs in the front server's deployment handle and picks replicas with `router.pick_replica`,
the policy the local backend uses (affinity by key or leading prompt tokens, unless the affine
replica carries more than `affinity_slack` requests beyond the least loaded one). A replica's load
is the requests in flight there as Ray's router counts them (its queue-length cache: sent and not
finished, refreshed by Ray's probes). The pick is the first rank; the others follow as a
fallback, for when the pick turns out to be full (`max_ongoing_requests`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from firebox.config import DeploymentConfig
from firebox.engine.types import EngineRequest
from firebox.serving.deployments.router import affinity_key, pick_replica


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A Ray Serve replica as `pick_replica` reads it."""

    replica: RunningReplica
    num_outstanding: int
    is_routable: bool = True

    @property
    def replica_id(self) -> str:
        return self.replica.replica_id.unique_id


class PrefixAffinityRouter(FIFOMixin, RequestRouter):
    _num_prefix_tokens = DeploymentConfig.prefix_affinity_tokens  # until Ray passes the deployment's
    _slack = DeploymentConfig.affinity_slack

    def initialize_state(self, prefix_affinity_tokens: int = _num_prefix_tokens,
                         affinity_slack: int = _slack, **_: object) -> None:
        self._num_prefix_tokens = prefix_affinity_tokens
        self._slack = affinity_slack

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        candidates = [_Candidate(r, self.replica_queue_len_cache.get(r.replica_id) or 0) for r in candidate_replicas]
        chosen = pick_replica(candidates, self._key(pending_request), self._slack)
        if chosen is None:
            return []
        rest = [c.replica for c in candidates if c is not chosen]
        return [[chosen.replica], rest] if rest else [[chosen.replica]]

    def _key(self, pending_request: PendingRequest | None) -> bytes | None:
        args = pending_request.args if pending_request is not None else ()
        if args and isinstance(args[0], EngineRequest):
            return affinity_key(args[0], self._num_prefix_tokens)
        return None
