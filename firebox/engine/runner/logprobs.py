"""Log-probabilities of chosen tokens and of the best alternatives.

Computed from log_softmax of the RAW model logits: before logit_bias, penalties, temperature and
truncation, so a logprob is what the model itself assigns (vLLM's default `raw_logprobs`). A token
forced by logit_bias, or kept by a truncation, can therefore carry a low logprob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from firebox.engine.types import TokenLogprob

# Prompt logprobs are computed this many positions at a time: a long prompt's log_softmax would
# otherwise hold a second [num_positions, vocab] tensor.
PROMPT_CHUNK_ROWS = 256


@dataclass(slots=True)
class LogprobTensors:
    token_ids: Tensor  # [n] long: the chosen (or target) token of each row
    logprobs: Tensor  # [n] float32: its logprob
    top_token_ids: Tensor  # [n, k] long, best first
    top_logprobs: Tensor  # [n, k] float32

    def to_lists(self, num_top: Sequence[int | None]) -> tuple[list[int], list[TokenLogprob | None]]:
        """Token ids and per-row logprobs with `num_top[i]` alternatives (None: row not asked), in
        one device-to-host transfer."""
        packed = torch.cat(
            [
                self.token_ids.unsqueeze(1).double(),  # float64 holds every token id exactly
                self.logprobs.unsqueeze(1).double(),
                self.top_token_ids.double(),
                self.top_logprobs.double(),
            ],
            dim=1,
        ).tolist()
        k = self.top_token_ids.shape[1]
        token_ids = [int(row[0]) for row in packed]
        entries = [None if n is None else _token_logprob(row, n, k) for row, n in zip(packed, num_top)]
        return token_ids, entries


def gather_logprobs(logits: Tensor, token_ids: Tensor, num_top: int) -> LogprobTensors:
    """logits [n, vocab] raw, token_ids [n]: their logprobs and the `num_top` best of each row."""
    log_probs = logits.log_softmax(-1)  # [n, vocab]
    chosen = log_probs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
    if num_top > 0:
        top_logprobs, top_token_ids = log_probs.topk(num_top, dim=-1)
    else:
        top_logprobs = log_probs.new_empty(len(token_ids), 0)
        top_token_ids = token_ids.new_empty(len(token_ids), 0)
    return LogprobTensors(token_ids, chosen, top_token_ids, top_logprobs)


def compute_prompt_logprobs(logits: Tensor, target_ids: Tensor, num_top: int) -> list[TokenLogprob]:
    """logits [n, vocab] at prompt positions, target_ids [n] the next prompt token at each: the
    logprob of each target and the `num_top` best alternatives."""
    num_top = min(num_top, logits.shape[1])
    starts = range(0, len(target_ids), PROMPT_CHUNK_ROWS)
    chunks = [
        gather_logprobs(logits[i : i + PROMPT_CHUNK_ROWS], target_ids[i : i + PROMPT_CHUNK_ROWS], num_top)
        for i in starts
    ]
    if not chunks:
        return []
    merged = LogprobTensors(*(torch.cat(parts) for parts in zip(*(_fields(c) for c in chunks))))
    _, entries = merged.to_lists([num_top] * len(target_ids))
    return entries  # type: ignore[return-value]  # no None: every row asked


def _fields(tensors: LogprobTensors) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tensors.token_ids, tensors.logprobs, tensors.top_token_ids, tensors.top_logprobs


def _token_logprob(row: list[float], num_top: int, k: int) -> TokenLogprob:
    num_top = min(num_top, k)
    top_ids, top_logprobs = row[2 : 2 + num_top], row[2 + k : 2 + k + num_top]
    return TokenLogprob(
        token_id=int(row[0]),
        logprob=row[1],
        top=[(int(tok), lp) for tok, lp in zip(top_ids, top_logprobs)],
    )
