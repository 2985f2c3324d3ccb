"""Truncation of the sampling distribution: top_k, top_p, min_p and typical_p.

top_k, top_p and min_p each keep the tokens whose logit is at least a per-row threshold, so they
combine into one threshold (their maximum). No stage sorts whole rows (top_p and typical_p: see
`mass_cut.py`). A tie at a threshold keeps every tied token, as transformers' warpers do. The
order is the one transformers applies: top_k, then top_p on what top_k kept (renormalized), then
min_p, then typical_p.
"""

from __future__ import annotations

import torch
from torch import Tensor

from firebox.engine.runner.mass_cut import smallest_keys_reaching_mass
from firebox.engine.runner.sampling_batch import RandomRows


def truncate_weights_(
    logits: Tensor,  # [n, vocab] after temperature
    weights: Tensor,  # [n, vocab] exp(logits - max_logit); zeroed in place where a token is cut
    max_logit: Tensor,  # [n, 1]
    rows: RandomRows,
) -> None:
    threshold = None
    if rows.top_k is not None:
        threshold = top_k_threshold(logits, rows.top_k, rows.max_top_k)
        weights.mul_(at_least(logits, threshold))  # top_p measures mass among what top_k kept
    later = None
    if rows.top_p is not None:
        later = top_p_threshold(logits, weights, max_logit, rows.top_p)
    if rows.min_p is not None:
        # p >= min_p * p_max  <=>  logit >= max_logit + log(min_p); log(0) = -inf keeps all
        later = _maximum(later, max_logit + rows.min_p.log())
    if later is not None:
        weights.mul_(at_least(logits, later))
        threshold = _maximum(threshold, later)
    if rows.typical_rows is not None:
        _apply_typical_(logits, weights, threshold, rows)


def at_least(logits: Tensor, threshold: Tensor) -> Tensor:  # [n, vocab] float32
    """1.0 where logits >= threshold [n, 1], else 0.0. Float arithmetic: on a CPU twice as fast as
    a bool mask, whose conversion for the multiply costs more than the comparison."""
    lowest = torch.finfo(logits.dtype).min  # a -inf threshold would make -inf - -inf = nan
    return (logits - threshold.clamp(min=lowest)).sign_().add_(1.0).clamp_(max=1.0)


def top_k_threshold(logits: Tensor, top_k: Tensor, max_top_k: int) -> Tensor:  # [n, 1]
    best = logits.topk(max_top_k, dim=-1).values  # [n, max_top_k], best first
    kth = best.gather(1, (top_k.clamp(min=1) - 1))
    return kth.masked_fill(top_k == 0, float("-inf"))


def top_p_threshold(
    logits: Tensor,  # [n, vocab]
    weights: Tensor,  # [n, vocab] 0 where top_k cut
    max_logit: Tensor,  # [n, 1]
    top_p: Tensor,  # [n, 1]
) -> Tensor:  # [n, 1] the smallest logit of each row's nucleus; -inf for rows with top_p 1
    threshold = torch.full_like(max_logit, float("-inf"))
    rows = (top_p < 1.0).squeeze(1).nonzero().squeeze(1)
    if rows.numel() == 0:
        return threshold
    if rows.numel() < len(logits):
        logits, weights = logits.index_select(0, rows), weights.index_select(0, rows)
        max_logit, top_p = max_logit[rows], top_p[rows]
    depth = max_logit - logits  # [rows, vocab] >= 0, the key: best first
    total = weights.sum(-1, keepdim=True)
    _, last_token = smallest_keys_reaching_mass(depth, weights, total, top_p)
    threshold[rows] = logits.gather(1, last_token)  # the logit itself: exact, unlike max - depth
    return threshold


def typical_keep_mask(logits: Tensor, mass: Tensor) -> Tensor:  # [n, vocab] bool
    """Locally typical sampling (Meister et al.), as transformers' TypicalLogitsWarper: keep the
    tokens whose surprisal is closest to the entropy until their mass reaches `mass` [n, 1].
    `logits` [n, vocab] has -inf where earlier stages removed tokens."""
    log_probs = logits.log_softmax(-1)
    probs = log_probs.exp()
    entropy = -(log_probs * probs).nansum(-1, keepdim=True)  # [n, 1]
    distance = (-log_probs - entropy).abs_()  # [n, vocab], inf where cut
    last_key, _ = smallest_keys_reaching_mass(distance, probs, probs.sum(-1, keepdim=True), mass)
    return distance <= last_key


def _apply_typical_(logits: Tensor, weights: Tensor, threshold: Tensor | None, rows: RandomRows) -> None:
    positions = rows.typical_rows
    typical_logits = logits.index_select(0, positions)  # [num_typical, vocab]
    if threshold is not None:
        typical_logits.masked_fill_(typical_logits < threshold[positions], float("-inf"))
    keep = typical_keep_mask(typical_logits, rows.typical_p)
    weights.index_copy_(0, positions, weights.index_select(0, positions) * keep)


def _maximum(a: Tensor | None, b: Tensor) -> Tensor:
    return b if a is None else torch.maximum(a, b)
