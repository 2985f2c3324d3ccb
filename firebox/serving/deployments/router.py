"""Which replica serves a request: least outstanding requests, with affinity.

Requests that share an affinity key (`prompt_cache_key`, `x-session-affinity`, `user`) or, lacking
one, the same leading prompt tokens, go to the same replica, where their prefix is cached, as long
as that replica carries at most `slack` requests more than the least loaded one. The affine
replica is picked by rendezvous hashing, so adding or removing a replica moves only the keys
that were on it. The one policy of both backends: `LiveDeployment` runs it over local replicas,
`ray_router.PrefixAffinityRouter` over Ray Serve's.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from typing import Protocol, TypeVar

from firebox.engine.types import EngineRequest


class Routable(Protocol):
    """What the policy reads of a replica (`replicas.Replica`, or a Ray Serve replica's view)."""

    @property
    def replica_id(self) -> str: ...

    @property
    def num_outstanding(self) -> int: ...

    @property
    def is_routable(self) -> bool: ...


R = TypeVar("R", bound=Routable)


def affinity_key(request: EngineRequest, num_prefix_tokens: int) -> bytes:
    """The request's explicit key, else its first `num_prefix_tokens` prompt tokens."""
    if request.affinity_key:
        return b"k:" + request.affinity_key.encode()
    return b"p:" + array("q", request.prompt_token_ids[:num_prefix_tokens]).tobytes()


def _weight(key: bytes, replica: Routable) -> bytes:
    return hashlib.blake2b(key + b"\0" + replica.replica_id.encode(), digest_size=8).digest()


def pick_replica(replicas: Sequence[R], key: bytes | None, slack: int) -> R | None:
    """The replica for a request with affinity `key`; None when no replica can take requests."""
    candidates = [r for r in replicas if r.is_routable]
    if not candidates:
        return None
    least = min(candidates, key=lambda r: r.num_outstanding)
    if key is None:
        return least
    affine = max(candidates, key=lambda r: _weight(key, r))
    return affine if affine.num_outstanding <= least.num_outstanding + slack else least
