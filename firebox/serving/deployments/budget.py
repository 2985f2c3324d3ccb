"""`ReplicaBudget`: the replicas of every deployment on this server, running or starting, held
to `--max-replicas`. Shared by the deployments of one `DeploymentManager`; used on the event loop."""

from __future__ import annotations


class ReplicaBudget:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit  # None: no cap
        self.num_held = 0

    @property
    def is_full(self) -> bool:
        return self.limit is not None and self.num_held >= self.limit

    def take(self, count: int) -> int:
        """Room for up to `count` more replicas; returns how many were granted (maybe 0)."""
        granted = max(count, 0) if self.limit is None else max(min(count, self.limit - self.num_held), 0)
        self.num_held += granted
        return granted

    def give_back(self, count: int = 1) -> None:
        """A replica stopped (or did not start)."""
        self.num_held -= count
