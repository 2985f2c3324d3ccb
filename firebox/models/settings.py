"""Config settings that change a model's arithmetic beyond ArchConfig's fields: each is either
used (sliding windows, below; rope scaling in layers/rotary.py; MoE sizes in the families) or
refused at load with a ValueError that names it, never silently ignored.

Settings that only matter for training (dropout, router jitter and aux losses, initializer
ranges) or for other layers (token ids, dtypes the runner picks) are neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firebox.loader.arch_config import ArchConfig

LAYER_TYPES = ("full_attention", "sliding_attention")


def no_sliding_window(config: ArchConfig, layer_idx: int) -> int | None:
    """Llama: transformers reads no `sliding_window` for it either."""
    return None


def sliding_window_everywhere(config: ArchConfig, layer_idx: int) -> int | None:
    """Mistral, Mixtral: `sliding_window` (None: full attention) on every layer."""
    return _window(config, "sliding_window")


def gated_sliding_window(config: ArchConfig, layer_idx: int) -> int | None:
    """Qwen3-MoE: `sliding_window` on every layer, only under `use_sliding_window`."""
    return _window(config, "sliding_window") if config.get("use_sliding_window", False) else None


def layered_sliding_window(config: ArchConfig, layer_idx: int) -> int | None:
    """Qwen2, Qwen3: under `use_sliding_window`, the layers `layer_types` marks as sliding, or
    without it the layers from `max_window_layers` on (as transformers' config derives them)."""
    window = gated_sliding_window(config, layer_idx)
    layer_types = config.get("layer_types")
    if layer_types is None:
        return window if window is not None and layer_idx >= config.get("max_window_layers", 28) else None
    if any(t not in LAYER_TYPES for t in layer_types) or len(layer_types) != config.num_hidden_layers:
        raise ValueError(f"config field layer_types={layer_types!r}: want one of {LAYER_TYPES} per layer")
    return window if layer_types[layer_idx] == "sliding_attention" else None


def _window(config: ArchConfig, key: str) -> int | None:
    window = config.get(key)
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"config field {key}={window!r}: want a positive number of positions or null")
    return window


@dataclass(frozen=True, slots=True)
class Refusal:
    """A setting firebox does not run: refused when `is_supported(value)` is False."""

    key: str
    is_supported: Callable[[Any], bool]
    why: str


def _full_rotary(value: Any) -> bool:
    return value is None or float(value) == 1.0


COMMON_REFUSALS: tuple[Refusal, ...] = (
    Refusal("partial_rotary_factor", _full_rotary, "rotary embeddings cover the whole head only"),
    Refusal(
        "rope_parameters",
        lambda params: _full_rotary((params or {}).get("partial_rotary_factor")),
        "partial_rotary_factor: rotary embeddings cover the whole head only",
    ),
    Refusal(
        "quantization_config",
        lambda value: value is None,
        "pre-quantized checkpoints are not loaded; firebox quantizes float weights itself (--quantization)",
    ),
)


def refuse_unsupported(config: ArchConfig, refusals: tuple[Refusal, ...]) -> None:
    for refusal in refusals:
        value = config.get(refusal.key)
        if not refusal.is_supported(value):
            raise ValueError(
                f"{config.architecture}: config field {refusal.key}={value!r} is not supported ({refusal.why})"
            )
