"""The 4-bit group kernel on a 1B model's layer shapes, by number of rows, int16 against int8
activations; optionally another firebox's kernel in the same run (the numbers in BENCHMARKS.md's
"1B shape, Q4_K_M" section).

    .venv/bin/python benchmarks/q4_kernel_rows.py [--firebox-root DIR] [--threads 2]

Six copies of each layer (8192x2048 like gate/up, 2048x8192 like down; 120 MB of weights in all),
so the weights come from memory as in a real step, not from the cache; best of 7 (2 at 256 rows)
wall-clock runs over the six, in ms per layer. `--firebox-root DIR` times the firebox package in
DIR instead (e.g. a `git archive` export of an older commit: its kernel builds on first use).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch


def best_ms(fn, runs: int) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--firebox-root", help="time the firebox package in this folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.firebox_root:
        sys.path.insert(0, args.firebox_root)
    from firebox.kernels import load_native
    from firebox.models.layers.quant import quantize_q4

    assert load_native(), "the native kernels did not build"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for rows_out, cols in ((8192, 2048), (2048, 8192)):
        layers = [quantize_q4(torch.randn(rows_out, cols) * 0.02) for _ in range(6)]
        has_int8 = "activation_bits" in {f.name for f in dataclasses.fields(layers[0])}
        for activation_bits in (16, 8) if has_int8 else (16,):
            if has_int8:
                layers = [dataclasses.replace(q, activation_bits=activation_bits) for q in layers]
            for rows in (1, 4, 32, 256):
                x = torch.randn(rows, cols)
                ms = best_ms(lambda: [q.matmul(x) for q in layers], 7 if rows < 64 else 2) / len(layers)
                gmacs = rows * rows_out * cols / ms / 1e6
                print(f"{rows_out}x{cols} int{activation_bits} activations, {rows:3d} rows: {ms:7.3f} ms/layer"
                      f" {gmacs:6.1f} GMAC/s", flush=True)


if __name__ == "__main__":
    main()
