"""Device and dtype choice, from what the hardware reports (never from a hard-coded CPU model)."""

from __future__ import annotations

import os

import torch

from firebox.config import DeviceConfig


def resolve_device(config: DeviceConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    return device


def configure_threads(config: DeviceConfig) -> None:
    torch.set_num_threads(config.num_threads or os.cpu_count() or 1)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # exact reference numerics on CPU unless a faster dtype is asked for
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
