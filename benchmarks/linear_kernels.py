"""Cost of one linear layer's matmul with each kernel firebox can pick, by number of rows.

    python benchmarks/linear_kernels.py [--threads 1]

Prints microseconds of process CPU time per call (CPU time, not wall time, so that a busy
machine disturbs the comparison less) for the default model's layer shapes: the 4-bit and 8-bit
group kernels (kernels/csrc/group_matmul.cpp), dense fp32 and dense bf16: the comparison behind
engine/runner/weight_kernels.py running the group kernels for every step size.
"""

from __future__ import annotations

import argparse
import time

import torch

from firebox.kernels import load_native
from firebox.models.layers.quant import quantize_q4, quantize_q8

SHAPES = ((960, 576), (3072, 576), (576, 1536), (49152, 576))  # qkv, gate_up, down, lm_head


def cpu_time_per_call(fn, weight_count: int) -> float:
    for _ in range(3):
        fn()
    reps = max(5, int(5e7 / weight_count))
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="1,2,3,4,8,16,32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not load_native():
        raise SystemExit("the native kernels did not build")
    for out_features, in_features in SHAPES:
        weight = torch.randn(out_features, in_features)
        q4, q8, w16 = quantize_q4(weight), quantize_q8(weight), weight.bfloat16()
        for rows in map(int, args.rows.split(",")):
            x = torch.randn(rows, in_features)
            kernels = {
                "q4": lambda: q4.matmul(x),
                "q8": lambda: q8.matmul(x),
                "fp32": lambda: x @ weight.T,
                "bf16": lambda: x.bfloat16() @ w16.T,
            }
            cells = [f"{name} {cpu_time_per_call(fn, weight.numel()) * 1e6:8.1f}" for name, fn in kernels.items()]
            print(f"[{out_features:5d}, {in_features:4d}] rows {rows:3d}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
