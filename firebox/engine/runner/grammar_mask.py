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
from firebox.kernels import has_native_op

_BITS = 32
# byte value -> its 8 bits, least significant first: unpacking is one gather of 1-byte entries
# rather than [rows, words, 32] int32 shifts (6 MB of temporaries at 32 rows of a 49k vocabulary)
_BYTE_BITS = (torch.arange(256).unsqueeze(1) >> torch.arange(8)).bitwise_and_(1).bool()  # [256, 8]


@dataclass(slots=True)
class AllowedTokens:
    row_ids: Tensor  # [num_constrained] long: the batch rows the bitmask rows belong to
    bitmask: Tensor  # [num_constrained, ceil(vocab / 32)] int32, bit set = allowed
    covers_all_rows: bool = False  # the constrained rows are the batch's rows 0..n-1, in order

    def mask_(self, logits: Tensor) -> Tensor:  # [n, vocab], edited in place and returned
        """Set every disallowed token of the constrained rows to -inf."""
        if logits.device.type == "cpu" and has_native_op("mask_disallowed_"):
            torch.ops.firebox.mask_disallowed_(logits, self.row_ids, self.bitmask)
            return logits
        return mask_with_torch_(logits, self)


def mask_with_torch_(logits: Tensor, allowed: AllowedTokens) -> Tensor:
    """`AllowedTokens.mask_` in torch ops, for devices and builds without the native kernel."""
    disallowed = ~unpack_bitmask(allowed.bitmask, logits.shape[1])
    if allowed.covers_all_rows:  # every row constrained: no copy of the rows out and back
        return logits.masked_fill_(disallowed, float("-inf"))
    rows = logits.index_select(0, allowed.row_ids)
    rows.masked_fill_(disallowed, float("-inf"))
    return logits.index_copy_(0, allowed.row_ids, rows)


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
    covers_all_rows = rows == list(range(len(request_ids)))
    return AllowedTokens(torch.tensor(rows, dtype=torch.long, device=device), bitmask, covers_all_rows)


def unpack_bitmask(bitmask: Tensor, vocab_size: int) -> Tensor:  # [k, vocab_size] bool
    """Bit t of row i (word t // 32, bit t % 32) as a boolean; tokens past the mask are False.
    (Little-endian words: byte b of word w holds tokens 32w + 8b .. 32w + 8b + 7.)"""
    num_rows = len(bitmask)
    as_bytes = bitmask.contiguous().view(torch.uint8).long()  # [k, words * 4]
    bits = _BYTE_BITS.to(bitmask.device)[as_bytes].view(num_rows, -1)  # [k, words * 32]
    if bits.shape[1] < vocab_size:
        bits = torch.nn.functional.pad(bits, (0, vocab_size - bits.shape[1]))
    return bits[:, :vocab_size]
