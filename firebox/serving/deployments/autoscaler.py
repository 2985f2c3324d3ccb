"""The autoscaler's decision: how many replicas a deployment should have, given its load.

Pure and clock-free (the caller passes `now`), so that the windows can be tested without waiting:
- scale up when the in-flight requests need more replicas than desired (at the policy's
  concurrency per replica) continuously for `scale_up_window`;
- scale down, never below one, when they need fewer continuously for `scale_down_window`;
- scale to zero when nothing was in flight for `scale_to_zero_window`;
always within [min_replica_count, max_replica_count]. A request arriving at zero replicas does not
wait for a window: the deployment asks for its first replica at once (`LiveDeployment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from firebox.serving.deployments.policy import AutoscalingPolicy


@dataclass(frozen=True, slots=True)
class LoadSample:
    now: float  # time.monotonic()
    num_in_flight: int  # requests on replicas plus requests waiting for one
    last_active: float  # when something was last in flight


@dataclass(slots=True)
class ScaleState:
    """What the autoscaler remembers between ticks."""

    over_since: float | None = None  # the load has needed more replicas since
    under_since: float | None = None  # the load has needed fewer replicas since


@dataclass(frozen=True, slots=True)
class ScaleBounds:
    min_replicas: int
    max_replicas: int
    target_concurrency: float  # in-flight requests per replica

    def clamp(self, count: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, count))


def needed_replicas(num_in_flight: int, target_concurrency: float) -> int:
    return math.ceil(num_in_flight / target_concurrency) if num_in_flight else 0


def decide(policy: AutoscalingPolicy, bounds: ScaleBounds, desired: int, load: LoadSample, state: ScaleState) -> int:
    """The new desired replica count (`desired` when nothing should change yet)."""
    need = bounds.clamp(needed_replicas(load.num_in_flight, bounds.target_concurrency))
    if need > desired:
        state.under_since = None
        state.over_since = load.now if state.over_since is None else state.over_since
        if load.now - state.over_since >= policy.scale_up_window_s:
            state.over_since = None
            return need
        return desired
    state.over_since = None
    if load.num_in_flight == 0 and load.now - load.last_active >= policy.scale_to_zero_window_s:
        state.under_since = None
        return bounds.clamp(0)
    down_to = bounds.clamp(max(need, 1))
    if down_to >= desired:
        state.under_since = None
        return desired
    state.under_since = load.now if state.under_since is None else state.under_since
    if load.now - state.under_since >= policy.scale_down_window_s:
        state.under_since = None
        return down_to
    return desired
