"""Dummy weights: a real architecture with deterministic random values, for benchmarks of shapes
whose checkpoints are not at hand (`dummy:<folder or config.json>`)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where weights are read, not where a model is described
    import torch

_INIT_RANGE = 0.02


def dummy_config_path(spec: str) -> Path:
    """The `config.json` a `dummy:` source names: the file itself, or the one in a folder."""
    path = Path(spec).expanduser()
    config = path / "config.json" if path.is_dir() else path
    if not config.is_file():
        raise ValueError(f"dummy source {spec!r}: no config file at {config}")
    return config


def init_dummy_weights(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter in place: norm weights with 1, everything else uniform in
    ±0.02. Each parameter's stream is seeded by `seed` and its name, so values do not depend on
    parameter order or device count; fast for billions of parameters."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.is_meta:
                raise ValueError(f"parameter {name} is on the meta device; materialize the module first")
            if param.dim() == 1 and "norm" in name:
                param.fill_(1.0)
                continue
            generator = torch.Generator(device=param.device)
            generator.manual_seed(_parameter_seed(seed, name))
            param.uniform_(-_INIT_RANGE, _INIT_RANGE, generator=generator)  # in place: no temporaries


def _parameter_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)
