"""The fewest tokens, taken in ascending order of a key, whose probability mass reaches p.

top_p (key: distance below the best logit) and typical_p (key: |surprisal - entropy|) are both
this cut. A full [rows, vocab] sort costs about 3 ms a row on a CPU at vocab 49152, so each row
is resolved by the cheaper of two exact selections instead:
1. the `NUM_CANDIDATES` smallest keys (`torch.topk`): enough when the cut comes early;
2. a histogram of the keys: the cumulative mass per bin finds the bin where the cut falls, and
   only that bin's tokens are ordered.
Either way the cut is the one a sort gives; tokens tied with the last kept key are all kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

NUM_CANDIDATES = 64
NUM_BINS = 1024
MAX_BIN_SPAN = 32.0  # keys this far above the smallest share the last bin (weight under e^-32)
# Mass within this of p counts as reaching it: with probs [0.5, 0.3, 0.15, 0.05] and top_p 0.8
# the nucleus is exactly the first two, whatever float32 makes of 0.5 + 0.3.
MASS_TOLERANCE = 1e-6


def smallest_keys_reaching_mass(
    keys: Tensor,  # [n, vocab], inf for tokens already cut
    weights: Tensor,  # [n, vocab] unnormalized probabilities, 0 where cut
    total: Tensor,  # [n, 1] sum of weights
    mass: Tensor,  # [n, 1] p
) -> tuple[Tensor, Tensor]:  # the last kept key [n, 1] and that token's id [n, 1]
    reach = mass - MASS_TOLERANCE
    num_candidates = min(NUM_CANDIDATES, keys.shape[1])
    candidates = keys.topk(num_candidates, dim=-1, largest=False)
    key_cut, token_cut, resolved = _cut(candidates, weights, total, torch.zeros_like(total), reach)
    wide = (~resolved).nonzero().squeeze(1)
    if wide.numel() == len(keys):
        return _histogram_cut(keys, weights, total, reach)
    if wide.numel() > 0:
        rows = [t.index_select(0, wide) for t in (keys, weights, total, reach)]
        wide_keys, wide_tokens = _histogram_cut(*rows)
        key_cut.index_copy_(0, wide, wide_keys)
        token_cut.index_copy_(0, wide, wide_tokens)
    return key_cut, token_cut


def _histogram_cut(keys: Tensor, weights: Tensor, total: Tensor, reach: Tensor) -> tuple[Tensor, Tensor]:
    lowest = keys.amin(-1, keepdim=True)  # [n, 1]
    span = (keys.clamp_max(lowest + MAX_BIN_SPAN).amax(-1, keepdim=True) - lowest).clamp_(min=1e-6)
    bins = (keys - lowest).mul_(NUM_BINS / span).clamp_(max=NUM_BINS - 1).long()  # [n, vocab]
    bin_mass = torch.zeros(len(keys), NUM_BINS, device=keys.device).scatter_add_(1, bins, weights)
    mass = bin_mass.cumsum_(-1).div_(total)  # [n, bins] mass up to each bin
    last_bin = (mass < reach).sum(-1, keepdim=True).clamp_(max=NUM_BINS - 1)  # where the cut falls
    mass_before = torch.nn.functional.pad(mass, (1, 0)).gather(1, last_bin)  # [n, 1]
    in_last_bin = bins == last_bin
    num_in_bin = int(in_last_bin.sum(-1, dtype=torch.int32).max())
    candidates = torch.where(in_last_bin, keys, float("inf")).topk(num_in_bin, dim=-1, largest=False)
    key_cut, token_cut, _ = _cut(candidates, weights, total, mass_before, reach)
    return key_cut, token_cut


def _cut(
    candidates: torch.return_types.topk,  # values (keys) and indices [n, k], ascending keys
    weights: Tensor,  # [n, vocab]
    total: Tensor,  # [n, 1]
    mass_before: Tensor,  # [n, 1] mass of the tokens ahead of every candidate
    reach: Tensor,  # [n, 1]
) -> tuple[Tensor, Tensor, Tensor]:  # last kept key [n, 1], its token [n, 1], resolved [n]
    probs = weights.gather(1, candidates.indices).div_(total)
    mass = probs.cumsum(-1).add_(mass_before)  # [n, k] mass up to each candidate
    mass_ahead = torch.cat([mass_before, mass[:, :-1]], dim=1)  # mass of the tokens strictly ahead
    last = (mass_ahead < reach).sum(-1, keepdim=True).clamp_(min=1) - 1
    resolved = (mass[:, -1:] >= reach).squeeze(1)
    return candidates.values.gather(1, last), candidates.indices.gather(1, last), resolved
