"""Multiply-adds per second of the group kernels on the 1B shape's layers, by number of rows:
the figure to hold against the machine's peak (benchmarks/madd_peak.cpp).

    .venv/bin/python benchmarks/layer_rates.py [16 | 8]   # activation bits of the 4-bit layers

Random weights packed as the loader packs them (4-bit layers; the output head 8-bit), best of 3,
two threads.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import torch

from firebox.kernels import load_native
from firebox.models.layers.quant import quantize_q4, quantize_q8

SHAPES = {"qkv": (3072, 2048), "gate_up": (16384, 2048), "down": (2048, 8192), "lm_head": (49152, 2048)}


def main() -> None:
    if not load_native():
        raise SystemExit("the native kernels did not build here")
    bits = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    torch.set_num_threads(2)
    for rows in (1, 4, 32, 256):
        rates = []
        for name, (out_features, in_features) in SHAPES.items():
            weight = torch.randn(out_features, in_features) * 0.02
            if name == "lm_head":
                packed = quantize_q8(weight)
            else:
                packed = dataclasses.replace(quantize_q4(weight), activation_bits=bits)
            x = torch.randn(rows, in_features)
            packed.matmul(x)
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                packed.matmul(x)
                best = min(best, time.perf_counter() - started)
            rates.append(f"{name} {rows * out_features * in_features / best / 1e9:.0f}")
        print(f"{rows:4d} rows, G multiply-adds/s: " + ", ".join(rates))


if __name__ == "__main__":
    main()
