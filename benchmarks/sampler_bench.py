"""Per-step cost of the batched sampler on synthetic logits (not a test).

    python benchmarks/sampler_bench.py [--vocab 49152] [--batch 1 32] [--threads N] [--device cpu]

Times `build_sampling_batch` (Python -> tensors) and `Sampler()` (plus `to_lists`, the step's
one host transfer) separately, best of the runs (a shared machine's noise only adds), for two
shapes of logits: "peaked" (a few strong candidates over a low Gaussian body: the top_p 0.9
nucleus is a few tokens) and "flat" (the body holds most of the mass, as a small model's often
does: the nucleus is thousands of tokens).

At batch 32 a good part of the cost is page faults: glibc hands each freed 6 MB tensor back to
the kernel, and the next one is faulted in again. Run with
`MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912` to see the sampler without them.
"""

from __future__ import annotations

import argparse
import time

import torch

from firebox.engine.runner.sampler import Sampler
from firebox.engine.runner.sampling_batch import build_sampling_batch
from firebox.engine.types import SamplingParams, ScheduledRequest

CASES = {
    "greedy": SamplingParams(temperature=0.0),
    "plain (T=1)": SamplingParams(),
    "temperature 0.7": SamplingParams(temperature=0.7),
    "top_k 50": SamplingParams(top_k=50),
    "top_p 0.9": SamplingParams(top_p=0.9),
    "top_k 50 + top_p 0.9": SamplingParams(top_k=50, top_p=0.9, temperature=0.7),
    "min_p 0.05": SamplingParams(min_p=0.05),
    "seeded + top_p 0.9": SamplingParams(top_p=0.9, seed=1),
    "typical_p 0.9": SamplingParams(typical_p=0.9),
    "penalties (500 output tokens)": SamplingParams(repetition_penalty=1.1, frequency_penalty=0.5),
    "logprobs 5": SamplingParams(logprobs=5),
}


def synthetic_logits(batch: int, vocab: int, profile: str, device: torch.device) -> torch.Tensor:
    logits = torch.randn(batch, vocab, device=device) * 2.0
    if profile == "flat":
        return logits
    spikes = torch.randint(0, vocab, (batch, 8), device=device)
    return logits.scatter_add_(1, spikes, 16.0 + torch.rand(batch, 8, device=device) * 4.0)


def nucleus_size(logits: torch.Tensor, top_p: float = 0.9) -> int:
    probs = logits[0].double().softmax(-1).sort(descending=True).values
    return int((probs.cumsum(-1) < top_p).sum()) + 1


def request(params: SamplingParams) -> ScheduledRequest:
    output = list(range(100, 600))
    return ScheduledRequest("r", [1], 600, [0], True, params, output, list(range(100)), len(output), False)


def best_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", choices=["peaked", "flat"], nargs="+", default=["peaked", "flat"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for profile in args.profile:
        run_table(args, profile, device)


def run_table(args: argparse.Namespace, profile: str, device: torch.device) -> None:
    nucleus = nucleus_size(synthetic_logits(1, args.vocab, profile, device))
    print(f"\n{profile} logits (top_p 0.9 nucleus ~{nucleus} tokens), vocab {args.vocab}, "
          f"{torch.get_num_threads()} threads, {device}; best ms per step")
    print(f"{'case':32s}" + "".join(f"{f'b{b} build':>11s}{f'b{b} sample':>12s}" for b in args.batch))
    for name, params in CASES.items():
        cells = [time_case(params, b, profile, args, device) for b in args.batch]
        print(f"{name:32s}" + "".join(f"{build:11.2f}{sample:12.2f}" for build, sample in cells))


def time_case(
    params: SamplingParams, batch_size: int, profile: str, args: argparse.Namespace, device: torch.device
) -> tuple[float, float]:
    """(build_sampling_batch ms, Sampler + to_lists ms) for one batch of identical requests."""
    requests = [request(params)] * batch_size
    logits = synthetic_logits(batch_size, args.vocab, profile, device)
    batch = build_sampling_batch(requests, args.vocab, [0], device)
    sampler = Sampler()
    build_ms = best_ms(lambda: build_sampling_batch(requests, args.vocab, [0], device), args.runs)
    return build_ms, best_ms(lambda: sampler(logits, batch).to_lists(), args.runs)


if __name__ == "__main__":
    main()
