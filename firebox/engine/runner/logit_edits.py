"""The edits to the model's logits that come before the greedy choice and temperature.

In order: logit_bias (added), min_tokens bans (-inf), repetition penalty (HF/CTRL style over
prompt + output tokens: a positive logit divided, a negative one multiplied), frequency and
presence penalties (OpenAI style over output tokens: logit -= freq * count + presence).

Every edit touches only (row, token) entries that occur in some request, never a whole
[rows, vocab] tensor, so its cost follows the number of tokens, not the vocabulary.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from firebox.engine.types import ScheduledRequest


@dataclass(slots=True)
class LogitEntries:
    row_ids: Tensor  # [num_entries] long
    token_ids: Tensor  # [num_entries] long
    values: Tensor  # [num_entries] float32


@dataclass(slots=True)
class LogitEdits:
    """A batch's edits; a kind that no row uses is None. (row, token) pairs are unique per kind."""

    logit_bias: LogitEntries | None  # values added
    banned: LogitEntries | None  # set to -inf (values unused): min_tokens not yet reached
    repetition: LogitEntries | None  # values are the penalties, applied by sign
    frequency_presence: LogitEntries | None  # values added: -(frequency * count + presence)

    def apply(self, logits: Tensor) -> Tensor:  # [n, vocab]
        """An edited copy: the raw logits stay intact for logprobs."""
        edited = logits.clone()
        if self.logit_bias is not None:
            _add_(edited, self.logit_bias)
        if self.banned is not None:
            edited[self.banned.row_ids, self.banned.token_ids] = float("-inf")
        if self.repetition is not None:
            index = (self.repetition.row_ids, self.repetition.token_ids)
            seen, penalty = edited[index], self.repetition.values
            edited[index] = torch.where(seen < 0, seen * penalty, seen / penalty)
        if self.frequency_presence is not None:
            _add_(edited, self.frequency_presence)
        return edited


class LogitBiasCache:
    """Each request's logit_bias as device tensors, built the first time the request samples and
    kept until the scheduler frees it (`drop`), so a step concatenates a few tensors instead of
    rebuilding up to MAX_LOGIT_BIAS Python entries per row."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[tuple[int, float], ...], Tensor, Tensor]] = {}

    def tensors(self, req: ScheduledRequest, vocab_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(token ids, biases) of `req`; rebuilt only when its bias is not the one cached for its id."""
        bias = req.sampling.logit_bias
        entry = self._entries.get(req.request_id)
        if entry is None or entry[0] is not bias:
            by_token = dict(bias)  # a repeated token id: the last bias wins
            _check_token_ids(list(by_token), vocab_size, "logit_bias")
            entry = (bias, _long(list(by_token), device), _float(list(by_token.values()), device))
            self._entries[req.request_id] = entry
        return entry[1], entry[2]

    def drop(self, request_ids: Iterable[str]) -> None:
        for request_id in request_ids:
            self._entries.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._entries)


def build_logit_edits(
    requests: Sequence[ScheduledRequest],
    vocab_size: int,
    eos_token_ids: Sequence[int],
    device: torch.device,
    bias_cache: LogitBiasCache | None = None,
) -> LogitEdits | None:
    """`bias_cache` keeps the logit_bias tensors between steps (the runner's); None builds them anew."""
    edits = LogitEdits(
        logit_bias=_logit_bias(requests, vocab_size, device, LogitBiasCache() if bias_cache is None else bias_cache),
        banned=_min_tokens_bans(requests, vocab_size, eos_token_ids, device),
        repetition=_repetition(requests, vocab_size, device),
        frequency_presence=_frequency_presence(requests, vocab_size, device),
    )
    kinds = (edits.logit_bias, edits.banned, edits.repetition, edits.frequency_presence)
    return None if all(kind is None for kind in kinds) else edits


def _logit_bias(
    requests: Sequence[ScheduledRequest], vocab_size: int, device: torch.device, cache: LogitBiasCache
) -> LogitEntries | None:
    rows = [i for i, req in enumerate(requests) if req.sampling.logit_bias]
    if not rows:
        return None
    pairs = [cache.tensors(requests[i], vocab_size, device) for i in rows]
    token_ids = torch.cat([tokens for tokens, _ in pairs])
    lengths = _long([len(tokens) for tokens, _ in pairs], device)
    row_ids = torch.repeat_interleave(_long(rows, device), lengths)
    return LogitEntries(row_ids, token_ids, torch.cat([values for _, values in pairs]))


def _min_tokens_bans(
    requests: Sequence[ScheduledRequest], vocab_size: int, eos_token_ids: Sequence[int], device: torch.device
) -> LogitEntries | None:
    """With ignore_eos, EOS does not end the request, so min_tokens has no reason to ban it."""
    entries = []
    for i, req in enumerate(requests):
        params = req.sampling
        if len(req.output_token_ids) < params.min_tokens:
            banned = set(params.stop_token_ids) | (set() if params.ignore_eos else set(eos_token_ids))
            entries.extend((i, tok) for tok in sorted(banned))
    if not entries:
        return None
    rows, token_ids = zip(*entries)
    _check_token_ids(token_ids, vocab_size, "stop_token_ids")
    return LogitEntries(_long(rows, device), _long(token_ids, device), torch.empty(0, device=device))


def _repetition(
    requests: Sequence[ScheduledRequest], vocab_size: int, device: torch.device
) -> LogitEntries | None:
    rows = [i for i, req in enumerate(requests) if req.sampling.repetition_penalty != 1.0]
    if not rows:
        return None
    sequences = [[requests[i].prompt_token_ids, requests[i].output_token_ids] for i in rows]
    row_ids, token_ids, _ = _unique_tokens(rows, sequences, vocab_size, device)
    penalty = _float([req.sampling.repetition_penalty for req in requests], device)
    return LogitEntries(row_ids, token_ids, penalty[row_ids])


def _frequency_presence(
    requests: Sequence[ScheduledRequest], vocab_size: int, device: torch.device
) -> LogitEntries | None:
    rows = [i for i, req in enumerate(requests) if _has_frequency_or_presence(req)]
    if not rows:
        return None
    outputs = [[requests[i].output_token_ids] for i in rows]
    row_ids, token_ids, counts = _unique_tokens(rows, outputs, vocab_size, device)
    frequency = _float([req.sampling.frequency_penalty for req in requests], device)
    presence = _float([req.sampling.presence_penalty for req in requests], device)
    return LogitEntries(row_ids, token_ids, -(frequency[row_ids] * counts + presence[row_ids]))


def _has_frequency_or_presence(req: ScheduledRequest) -> bool:
    return req.sampling.frequency_penalty != 0.0 or req.sampling.presence_penalty != 0.0


def _unique_tokens(
    rows: list[int], sequences: list[list[Sequence[int]]], vocab_size: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:  # row ids, token ids, occurrences: one entry per distinct pair
    lengths = _long([sum(len(seq) for seq in seqs) for seqs in sequences], device)
    token_ids = _long(list(itertools.chain.from_iterable(itertools.chain.from_iterable(sequences))), device)
    row_ids = torch.repeat_interleave(_long(rows, device), lengths)
    keys, counts = torch.unique(row_ids * vocab_size + token_ids, return_counts=True)
    return keys // vocab_size, keys % vocab_size, counts.to(torch.float32)


def _add_(logits: Tensor, entries: LogitEntries) -> None:
    logits.index_put_((entries.row_ids, entries.token_ids), entries.values, accumulate=True)


def _check_token_ids(token_ids: Sequence[int], vocab_size: int, what: str) -> None:
    bad = [tok for tok in token_ids if not 0 <= tok < vocab_size]
    if bad:
        raise ValueError(f"{what}: token ids {bad[:5]} are outside the vocabulary (size {vocab_size})")


def _long(values: Sequence[int], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def _float(values: Sequence[float], device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)
