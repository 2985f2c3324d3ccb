"""One step's sampling parameters as tensors: one row per request that samples this step.

`build_sampling_batch` reads the scheduled requests once per step. Every stage that no row of the
batch needs is left as `None`, so the sampler skips it: a plain batch costs an exp pass, a
cumulative sum and a binary search per row, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from firebox.engine.runner.grammar_mask import AllowedTokens, build_allowed_tokens
from firebox.engine.runner.logit_edits import LogitBiasCache, LogitEdits, build_logit_edits
from firebox.engine.types import SamplingParams, ScheduledRequest, TokenBitmask

_MASK_63 = 0x7FFF_FFFF_FFFF_FFFF
_MASK_64 = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(slots=True)
class RandomRows:
    """The rows that sample at random (temperature > 0 and top_k != 1) and their parameters.

    A filter that no row uses is None. Positions (`typical_rows`, `generators`) index these rows,
    not the batch.
    """

    row_ids: Tensor | None  # [num_random] long batch rows; None when every row of the batch is random
    temperature: Tensor | None  # [num_random, 1]; None when all are 1.0
    top_k: Tensor | None  # [num_random, 1] long, 0 = off
    max_top_k: int  # largest top_k of these rows (0 when none)
    top_p: Tensor | None  # [num_random, 1]
    min_p: Tensor | None  # [num_random, 1]
    typical_rows: Tensor | None  # [num_typical] long, positions with typical_p < 1
    typical_p: Tensor | None  # [num_typical, 1]
    generators: dict[int, torch.Generator]  # position -> generator, rows with a seed only


@dataclass(slots=True)
class SamplingBatch:
    num_rows: int
    vocab_size: int
    greedy_row_ids: Tensor | None  # [num_greedy] long; set only when greedy and random rows mix
    random: RandomRows | None  # None when every row is greedy
    edits: LogitEdits | None  # logit_bias, min_tokens, penalties; None when no row has any
    allowed: AllowedTokens | None  # grammar masks of constrained rows; None when no row is constrained
    num_logprobs: list[int | None]  # per row: top-N asked for, None = not asked
    max_logprobs: int | None  # largest N asked for (clamped to the vocab); None when no row asked

    @property
    def all_greedy(self) -> bool:
        return self.random is None


def build_sampling_batch(
    requests: Sequence[ScheduledRequest],
    vocab_size: int,
    eos_token_ids: Sequence[int],
    device: torch.device,
    token_bitmask: TokenBitmask | None = None,
    bias_cache: LogitBiasCache | None = None,
) -> SamplingBatch:
    """Tensors for the requests that sample this step, in the order of their logits rows;
    `bias_cache` (the runner's) keeps each request's logit_bias tensors between steps."""
    greedy = [i for i, req in enumerate(requests) if is_greedy(req.sampling)]
    randoms = [i for i, req in enumerate(requests) if not is_greedy(req.sampling)]
    asked = [req.sampling.logprobs for req in requests]
    max_asked = max((n for n in asked if n is not None), default=None)
    return SamplingBatch(
        num_rows=len(requests),
        vocab_size=vocab_size,
        greedy_row_ids=_long(greedy, device) if greedy and randoms else None,
        random=_random_rows(requests, randoms, vocab_size, device) if randoms else None,
        edits=build_logit_edits(requests, vocab_size, eos_token_ids, device, bias_cache),
        allowed=build_allowed_tokens(token_bitmask, [req.request_id for req in requests], device),
        num_logprobs=asked,
        max_logprobs=None if max_asked is None else min(max_asked, vocab_size),
    )


def is_greedy(params: SamplingParams) -> bool:
    """top_k == 1 keeps only the best token: exactly greedy, ties broken as torch.argmax does."""
    return params.temperature == 0.0 or params.top_k == 1


def seeded_generator(seed: int, seed_offset: int, device: torch.device) -> torch.Generator:
    """A generator that depends on (seed, seed_offset) only: no state survives between steps, so
    a request draws the same tokens whatever shares its batch, and resumes after preemption."""
    mixed = _splitmix64((_splitmix64(seed & _MASK_64) + seed_offset) & _MASK_64)
    return torch.Generator(device=device).manual_seed(mixed & _MASK_63)


def _splitmix64(value: int) -> int:
    value = (value + 0x9E37_79B9_7F4A_7C15) & _MASK_64
    value = ((value ^ (value >> 30)) * 0xBF58_476D_1CE4_E5B9) & _MASK_64
    value = ((value ^ (value >> 27)) * 0x94D0_49BB_1331_11EB) & _MASK_64
    return value ^ (value >> 31)


def _random_rows(
    requests: Sequence[ScheduledRequest], rows: list[int], vocab_size: int, device: torch.device
) -> RandomRows:
    params = [requests[i].sampling for i in rows]
    top_k = [p.top_k if p.top_k < vocab_size else 0 for p in params]
    typical = [j for j, p in enumerate(params) if p.typical_p < 1.0]
    return RandomRows(
        row_ids=None if len(rows) == len(requests) else _long(rows, device),
        temperature=_column([p.temperature for p in params], 1.0, device),
        top_k=_column(top_k, 0, device, torch.long),
        max_top_k=max(top_k),
        top_p=_column([p.top_p for p in params], 1.0, device),
        min_p=_column([p.min_p for p in params], 0.0, device),
        typical_rows=_long(typical, device) if typical else None,
        typical_p=_column([params[j].typical_p for j in typical], 1.0, device),
        generators={
            j: seeded_generator(p.seed, requests[i].seed_offset, device)
            for j, (i, p) in enumerate(zip(rows, params))
            if p.seed is not None
        },
    )


def _column(values: list, neutral: float | int, device: torch.device, dtype=torch.float32) -> Tensor | None:
    """[n, 1] tensor of the values, or None when every value is the neutral one (stage skipped)."""
    if all(v == neutral for v in values):
        return None
    return torch.tensor(values, dtype=dtype, device=device).unsqueeze(1)


def _long(values: Sequence[int], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)
