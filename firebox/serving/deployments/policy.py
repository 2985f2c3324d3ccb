"""The autoscaling policy of a deployment, as the control plane spells it and as the autoscaler
uses it: windows in seconds, and the concurrency one replica should carry.

Durations follow the API's strings: "30s", "0.5s", "10m", "1h", "1h30m", "250ms" (a bare number
is seconds). Windows may be fractions of a second, which tests use; scale-up and scale-down
windows are at most an hour, as the hosted API has it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_SCALE_UP_WINDOW_S = 30.0
DEFAULT_SCALE_DOWN_WINDOW_S = 600.0
DEFAULT_SCALE_TO_ZERO_WINDOW_S = 3600.0
MAX_SCALE_WINDOW_S = 3600.0
DEFAULT_LOAD_TARGET = 0.8  # `default`: this fraction of a replica's batch slots (max_num_seqs) busy
LOAD_TARGET_KEYS = ("default", "concurrent_requests")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


def parse_duration(value: str | float | int) -> float:
    """Seconds of "30s", "1h30m", "0.5s", "250ms" or a bare number; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {value!r}: use e.g. '30s', '0.5s', '10m' or '1h'")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a non-negative number of seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """The API's form: seconds with an `s` ("600s", "0.5s")."""
    return f"{seconds:.9g}s"


@dataclass(frozen=True, slots=True)
class AutoscalingPolicy:
    scale_up_window_s: float = DEFAULT_SCALE_UP_WINDOW_S
    scale_down_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
    scale_to_zero_window_s: float = DEFAULT_SCALE_TO_ZERO_WINDOW_S
    load_targets: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("scale_up_window_s", "scale_down_window_s"):
            if getattr(self, name) > MAX_SCALE_WINDOW_S:
                raise ValueError(f"{name.removesuffix('_s')} must be at most 1h")
        for key, value in self.load_targets:
            if key not in LOAD_TARGET_KEYS:
                raise ValueError(f"load target {key!r} is not supported; firebox scales on {LOAD_TARGET_KEYS}")
            if not value > 0 or (key == "default" and value > 1):
                raise ValueError(f"load target {key!r} must be > 0 (and at most 1 for 'default'), got {value}")

    @classmethod
    def from_api(cls, body: Mapping[str, Any] | None) -> AutoscalingPolicy:
        """From the control plane's `autoscalingPolicy` object; ValueError for invalid fields."""
        body = dict(body or {})
        unknown = set(body) - {"scaleUpWindow", "scaleDownWindow", "scaleToZeroWindow", "loadTargets"}
        if unknown:
            raise ValueError(f"unknown autoscalingPolicy field(s): {sorted(unknown)}")
        targets = body.get("loadTargets") or {}
        return cls(
            scale_up_window_s=_window(body, "scaleUpWindow", DEFAULT_SCALE_UP_WINDOW_S),
            scale_down_window_s=_window(body, "scaleDownWindow", DEFAULT_SCALE_DOWN_WINDOW_S),
            scale_to_zero_window_s=_window(body, "scaleToZeroWindow", DEFAULT_SCALE_TO_ZERO_WINDOW_S),
            load_targets=tuple(sorted((str(k), float(v)) for k, v in targets.items())),
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "scaleUpWindow": format_duration(self.scale_up_window_s),
            "scaleDownWindow": format_duration(self.scale_down_window_s),
            "scaleToZeroWindow": format_duration(self.scale_to_zero_window_s),
            "loadTargets": dict(self.load_targets),
        }

    def concurrency_target(self, max_num_seqs: int) -> float:
        """In-flight requests one replica should carry: `concurrent_requests` when given, else
        the `default` fraction of its batch slots."""
        targets = dict(self.load_targets)
        if "concurrent_requests" in targets:
            return targets["concurrent_requests"]
        return max(targets.get("default", DEFAULT_LOAD_TARGET) * max_num_seqs, 1.0)


def _window(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    return default if value in (None, "") else parse_duration(value)
