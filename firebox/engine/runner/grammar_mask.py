"""The grammar's allowed-token bitmask, applied to a step's logits (constrained decoding).

The engine core fills one bitmask row per constrained request (`engine/structured_output.py`);
here the rows are unpacked and every disallowed token's logit becomes -inf, in one vectorized pass
over the constrained rows only: an unconstrained row is never touched, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from firebox.engine.types import TokenBitmask

_BITS = 32


@dataclass(slots=True)
class AllowedTokens:
    row_ids: Tensor  # [num_constrained] long: the batch rows the bitmask rows belong to
    bitmask: Tensor  # [num_constrained, ceil(vocab / 32)] int32, bit set = allowed

    def mask_(self, logits: Tensor) -> Tensor:  # [n, vocab], edited in place and returned
        """Set every disallowed token of the constrained rows to -inf."""
        rows = logits.index_select(0, self.row_ids)
        rows.masked_fill_(~unpack_bitmask(self.bitmask, logits.shape[1]), float("-inf"))
        return logits.index_copy_(0, self.row_ids, rows)


def build_allowed_tokens(
    token_bitmask: TokenBitmask | None, request_ids: Sequence[str], device: torch.device
) -> AllowedTokens | None:
    """The bitmask rows of the requests sampled this step, placed at their rows of the batch (a
    request with drafts has several rows, in order, both in the batch and in the bitmask)."""
    if token_bitmask is None:
        return None
    rows_of: dict[str, list[int]] = {}
    for row, request_id in enumerate(request_ids):
        rows_of.setdefault(request_id, []).append(row)
    taken: dict[str, int] = {}
    rows = []
    for request_id in token_bitmask.request_ids:
        nth = taken.get(request_id, 0)
        rows.append(rows_of[request_id][nth])
        taken[request_id] = nth + 1
    bitmask = torch.from_numpy(token_bitmask.bitmask).to(device)
    return AllowedTokens(torch.tensor(rows, dtype=torch.long, device=device), bitmask)


def unpack_bitmask(bitmask: Tensor, vocab_size: int) -> Tensor:  # [k, vocab_size] bool
    """Bit t of row i (word t // 32, bit t % 32) as a boolean; tokens past the mask are False."""
    shifts = torch.arange(_BITS, dtype=torch.int32, device=bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts).bitwise_and_(1).view(len(bitmask), -1)  # [k, words * 32]
    if bits.shape[1] < vocab_size:
        bits = torch.nn.functional.pad(bits, (0, vocab_size - bits.shape[1]))
    return bits[:, :vocab_size].bool()
