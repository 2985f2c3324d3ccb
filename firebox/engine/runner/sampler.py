"""The batched sampler: one pass over [num_sampled, vocab] logits with per-row parameters.

Order: logit edits (bias, min_tokens, penalties) -> grammar masks (constrained rows) -> greedy rows take argmax -> the others divide
by their temperature, truncate (top_k, top_p, min_p, typical_p) and draw.

Drawing is inverse-CDF sampling with one uniform per row: cumulative sums of the row's
unnormalized probabilities and a binary search. It is exact, needs no host sync, and keeps the
seeded-row guarantee: a row with a seed draws its uniform from its own generator, seeded from
(seed, seed_offset), so its token depends on nothing else in the batch. (The exponential race,
argmax(p / Exponential(1)), does the same on a GPU, but on a CPU drawing vocab-many exponentials
costs ten times the rest of the sampler: 30 ms for 32 x 49152.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from firebox.engine.runner.logprobs import LogprobTensors, compute_prompt_logprobs, gather_logprobs
from firebox.engine.runner.sampling_batch import RandomRows, SamplingBatch, build_sampling_batch
from firebox.engine.runner.truncation import truncate_weights_
from firebox.engine.types import TokenLogprob

CDF_BLOCK = 1024  # tokens per block of the two-level inverse CDF

__all__ = ["Sampler", "SamplerOutput", "SamplingBatch", "build_sampling_batch", "compute_prompt_logprobs"]


@dataclass(slots=True)
class SamplerOutput:
    sampled_token_ids: Tensor  # [num_sampled] long
    logprobs: LogprobTensors | None  # None when no row asked for logprobs
    num_logprobs: list[int | None]  # per row, from the batch

    def to_lists(self) -> tuple[list[int], list[TokenLogprob | None] | None]:
        """Token ids and logprobs (None for rows that did not ask) in one host transfer."""
        if self.logprobs is None:
            return self.sampled_token_ids.tolist(), None
        return self.logprobs.to_lists(self.num_logprobs)


class Sampler:
    """Stateless; one instance serves every step."""

    def __call__(self, logits: Tensor, batch: SamplingBatch) -> SamplerOutput:
        """logits [num_sampled, vocab] float32, one row per request of `batch`; never modified."""
        if logits.shape != (batch.num_rows, batch.vocab_size):
            expected = (batch.num_rows, batch.vocab_size)
            raise ValueError(f"logits {tuple(logits.shape)} do not match the batch {expected}")
        processed = logits if batch.edits is None else batch.edits.apply(logits)
        if batch.allowed is not None:  # after the edits: no bias can revive a disallowed token
            processed = batch.allowed.mask_(processed.clone() if processed is logits else processed)
        token_ids = _choose_tokens(processed, batch)
        logprobs = None
        if batch.max_logprobs is not None:
            logprobs = gather_logprobs(logits, token_ids, batch.max_logprobs)  # raw logits: see logprobs.py
        return SamplerOutput(token_ids, logprobs, batch.num_logprobs)


def _choose_tokens(processed: Tensor, batch: SamplingBatch) -> Tensor:  # [n] long
    rows = batch.random
    if rows is None:
        return processed.argmax(-1)
    if rows.row_ids is None:
        return sample_random_rows(processed, rows)
    token_ids = torch.empty(batch.num_rows, dtype=torch.long, device=processed.device)
    greedy = batch.greedy_row_ids
    token_ids[greedy] = processed.index_select(0, greedy).argmax(-1)
    token_ids[rows.row_ids] = sample_random_rows(processed.index_select(0, rows.row_ids), rows)
    return token_ids


def sample_random_rows(logits: Tensor, rows: RandomRows) -> Tensor:  # [n] long
    """logits [n, vocab] processed, one row per random row."""
    weights = truncated_weights(logits, rows)
    return sample_inverse_cdf(weights, _uniforms(rows, len(logits), logits.device))


def truncated_weights(logits: Tensor, rows: RandomRows) -> Tensor:  # [n, vocab]
    """Unnormalized sampling probabilities after temperature and truncation (0 = token cut)."""
    if rows.temperature is not None:
        logits = logits / rows.temperature
    max_logit = logits.amax(-1, keepdim=True)  # [n, 1]
    weights = (logits - max_logit).exp_()  # best token = 1
    truncate_weights_(logits, weights, max_logit, rows)
    return weights


def sample_inverse_cdf(weights: Tensor, uniforms: Tensor) -> Tensor:  # [n] long
    """weights [n, vocab] >= 0, each row with some positive entry; uniforms [n, 1] in [0, 1).

    Two levels: a block of `CDF_BLOCK` tokens by the cumulative block sums, then a token inside
    it. (A cumulative sum over a whole row is a chain of dependent adds, 3 ms for 32 x 49152 on
    a CPU; block sums vectorize.) A token of weight zero is never chosen: its cumulative sum
    equals its predecessor's.
    """
    vocab_size = weights.shape[1]
    block_cdf = _block_sums(weights).cumsum_(-1)  # [n, num_blocks]
    block, remainder = _search(block_cdf, uniforms * block_cdf[:, -1:])
    token_ids = block * CDF_BLOCK + torch.arange(CDF_BLOCK, device=weights.device)  # [n, CDF_BLOCK]
    in_vocab = token_ids < vocab_size  # the last block may be short
    inner = weights.gather(1, token_ids.clamp_(max=vocab_size - 1)).mul_(in_vocab)
    position, _ = _search(inner.cumsum_(-1), remainder)
    return (block * CDF_BLOCK + position).squeeze(1)


def _block_sums(weights: Tensor) -> Tensor:  # [n, num_blocks]
    num_rows, vocab_size = weights.shape
    num_full = vocab_size // CDF_BLOCK
    parts = []
    if num_full:
        parts.append(weights[:, : num_full * CDF_BLOCK].view(num_rows, num_full, CDF_BLOCK).sum(-1))
    if vocab_size % CDF_BLOCK:
        parts.append(weights[:, num_full * CDF_BLOCK :].sum(-1, keepdim=True))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _search(cdf: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:  # index [n, 1], remainder [n, 1]
    """The first position whose cumulative sum exceeds the target, and the target less the sum
    before that position. A target rounded up to the total is moved just below it."""
    total = cdf[:, -1:]
    targets = torch.minimum(targets, torch.nextafter(total, torch.zeros_like(total)))
    index = torch.searchsorted(cdf, targets, right=True)
    before = cdf.gather(1, (index - 1).clamp_(min=0)).masked_fill_(index == 0, 0.0)
    return index, targets - before


def _uniforms(rows: RandomRows, num_rows: int, device: torch.device) -> Tensor:  # [n, 1]
    uniforms = torch.rand(num_rows, 1, device=device)
    for position, generator in rows.generators.items():
        uniforms[position] = torch.rand(1, generator=generator, device=device)
    return uniforms
