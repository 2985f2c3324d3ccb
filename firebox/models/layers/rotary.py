"""Rotary position embedding (neox / rotate-half layout) with the rope-scaling variants.

The cos|sin table is computed once in float32 for every position up to max_position_embeddings;
a step looks it up at `positions` once and every layer reuses the lookup. Frequencies follow
transformers' `modeling_rope_utils` so that logits match it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

InvFreq = tuple[torch.Tensor, float]  # inverse frequencies [head_dim // 2], cos/sin scale


def _base_inv_freq(head_dim: int, theta: float) -> torch.Tensor:  # [head_dim // 2]
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def _default(head_dim: int, theta: float, scaling: Mapping[str, Any], max_pos: int) -> InvFreq:
    return _base_inv_freq(head_dim, theta), 1.0


def _linear(head_dim: int, theta: float, scaling: Mapping[str, Any], max_pos: int) -> InvFreq:
    return _base_inv_freq(head_dim, theta) / scaling["factor"], 1.0


def _llama3(head_dim: int, theta: float, scaling: Mapping[str, Any], max_pos: int) -> InvFreq:
    inv_freq = _base_inv_freq(head_dim, theta)
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling.get("original_max_position_embeddings") or max_pos
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are interpolated by `factor`, short ones kept, the band between blended.
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    return torch.where(is_medium, blended, scaled), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_attention_factor(scaling: Mapping[str, Any], factor: float) -> float:
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
    return _yarn_mscale(factor)


def _yarn(head_dim: int, theta: float, scaling: Mapping[str, Any], max_pos: int) -> InvFreq:
    old_len = scaling.get("original_max_position_embeddings") or max_pos
    factor = scaling.get("factor") or max_pos / old_len
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        return head_dim * math.log(old_len / (num_rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    # High frequencies (ramp 0) extrapolate unchanged, low ones (ramp 1) interpolate by `factor`.
    inv_freq = 1.0 / (factor * pos_freqs) * ramp + 1.0 / pos_freqs * (1 - ramp)
    return inv_freq, _yarn_attention_factor(scaling, factor)


ROPE_SCALING_TYPES: Mapping[str, Callable[[int, float, Mapping[str, Any], int], InvFreq]] = MappingProxyType(
    {"default": _default, "linear": _linear, "llama3": _llama3, "yarn": _yarn}
)


def rope_inv_freq(head_dim: int, theta: float, scaling: Mapping[str, Any] | None, max_pos: int) -> InvFreq:
    """Inverse frequencies and cos/sin scale for a config's `rope_scaling` (None = plain RoPE)."""
    scaling = scaling or {}
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type not in ROPE_SCALING_TYPES:
        supported = ", ".join(ROPE_SCALING_TYPES)
        raise ValueError(
            f"config field rope_scaling: unsupported rope scaling type {rope_type!r}; supported: {supported}"
        )
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("config field partial_rotary_factor: partial rotary embeddings (< 1) are not supported")
    return ROPE_SCALING_TYPES[rope_type](head_dim, theta, scaling, max_pos)


class RotaryEmbedding(nn.Module):
    def __init__(
        self, head_dim: int, max_position: int, theta: float, scaling: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        inv_freq, attention_factor = rope_inv_freq(head_dim, theta, scaling, max_position)
        freqs = torch.outer(
            torch.arange(max_position, dtype=torch.float32), inv_freq
        )  # [max_pos, head_dim // 2]
        cos_sin = torch.cat((freqs.cos(), freqs.sin()), dim=-1) * attention_factor  # [max_pos, head_dim]
        self.register_buffer("cos_sin_cache", cos_sin, persistent=False)

    def lookup(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """cos|sin rows for `positions` [num_tokens], cast once to the activations' dtype."""
        return self.cos_sin_cache.index_select(0, positions).to(dtype)  # [num_tokens, head_dim]


def apply_rotary(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [num_tokens, num_heads, head_dim] by the looked-up cos|sin [num_tokens, head_dim]."""
    cos, sin = cos_sin.unsqueeze(1).chunk(2, dim=-1)  # [num_tokens, 1, head_dim // 2] each
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
