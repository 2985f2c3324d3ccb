"""Portable paged attention in plain torch (CPU and any GPU).

Decodes (one query token each) run as one batched SDPA call over their gathered contexts, with
the query heads of a KV group folded into the query-length axis, so grouped-query attention needs
no repeat of K/V. Prefills run one SDPA call each: a fresh prompt attends to its own k/v with
`is_causal`, a chunk that continues a cached context gathers that context from the pool. A layer
with a sliding window narrows those masks to each query's last `sliding_window` positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from firebox.models.attention import AttentionBatch


@dataclass(slots=True)
class PrefillSpan:
    token_start: int
    token_end: int
    context_len: int  # tokens cached before this chunk
    context_slots: torch.Tensor | None  # [context_len + query_len]; None for a fresh prompt
    mask: torch.Tensor | None  # [query_len, context_len + query_len] bool, True = may attend


@dataclass(slots=True)
class TorchAttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] where each new token's k/v is written
    num_decodes: int
    decode_slots: torch.Tensor | None  # [num_decodes, max_seq_len]
    decode_lens: torch.Tensor | None  # [num_decodes] KV length of each decode, its own token included
    decode_mask: torch.Tensor | None  # [num_decodes, 1, 1, max_seq_len] bool
    prefills: list[PrefillSpan]


def _slots(block_table: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Flat cache slots of `positions` (any shape) under a block table of the same leading shape."""
    blocks = torch.gather(block_table, -1, positions // block_size)
    return blocks * block_size + positions % block_size


def causal_mask(query_pos: torch.Tensor, key_len: int, sliding_window: int | None = None) -> torch.Tensor:
    """[len(query_pos), key_len] bool, True = may attend: keys at or before each query's position,
    and within its last `sliding_window` positions when there is a window."""
    keys = torch.arange(key_len, device=query_pos.device)
    mask = keys <= query_pos[:, None]
    return mask if sliding_window is None else mask & (keys > query_pos[:, None] - sliding_window)


def sliding_window_mask(
    context_len: int, query_len: int, sliding_window: int | None, device: torch.device
) -> torch.Tensor | None:
    """[query_len, context_len + query_len] mask of a chunk's queries under a sliding window; None
    where the window covers every key, so the plain causal mask applies."""
    key_len = context_len + query_len
    if sliding_window is None or key_len <= sliding_window:
        return None
    return causal_mask(context_len + torch.arange(query_len, device=device), key_len, sliding_window)


def _padded(rows: list[list[int]]) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0) or 1
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)


class TorchAttentionBackend:
    name = "torch"

    def allocate_kv_cache(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # zeroed: a padded gather reads unwritten slots, and 0 * NaN garbage would be NaN
        return torch.zeros(shape, dtype=dtype, device=device)

    def kv_cache_shape(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
        return (2, num_blocks, block_size, num_kv_heads, head_dim)

    def build_metadata(self, batch: AttentionBatch, device: torch.device) -> TorchAttentionMetadata:
        bs = batch.block_size
        tables = _padded(batch.block_tables)  # [num_reqs, max_blocks]
        seq_lens = [c + q for c, q in zip(batch.context_lens, batch.query_lens)]
        max_len = max(seq_lens)
        positions = torch.arange(max_len)
        slot_rows = _slots(tables, positions.clamp(max=tables.shape[1] * bs - 1).expand(len(seq_lens), -1), bs)

        slot_mapping = torch.cat(
            [slot_rows[i, c : c + q] for i, (c, q) in enumerate(zip(batch.context_lens, batch.query_lens))]
        )
        nd = batch.num_decodes
        decode_slots = decode_lens = decode_mask = None
        if nd:
            dec_len = max(seq_lens[:nd])
            decode_slots = slot_rows[:nd, :dec_len].to(device)
            decode_lens = torch.tensor(seq_lens[:nd], device=device)
            decode_mask = causal_mask(decode_lens - 1, dec_len)[:, None, None, :]
        prefills = []
        start = nd
        for i in range(nd, len(seq_lens)):
            c, q = batch.context_lens[i], batch.query_lens[i]
            span = PrefillSpan(start, start + q, c, None, None)
            if c:
                span.context_slots = slot_rows[i, : c + q].to(device)
                span.mask = causal_mask(c + torch.arange(q, device=device), c + q)
            prefills.append(span)
            start += q
        return TorchAttentionMetadata(
            slot_mapping=slot_mapping.to(device),
            num_decodes=nd,
            decode_slots=decode_slots,
            decode_lens=decode_lens,
            decode_mask=decode_mask,
            prefills=prefills,
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: TorchAttentionMetadata,
        scale: float,
        sliding_window: int | None = None,
    ) -> torch.Tensor:
        num_tokens, num_heads, head_dim = q.shape
        num_kv_heads = k.shape[1]
        group = num_heads // num_kv_heads
        k_pool = kv_cache[0].view(-1, num_kv_heads, head_dim)
        v_pool = kv_cache[1].view(-1, num_kv_heads, head_dim)
        k_pool.index_copy_(0, meta.slot_mapping, k.to(k_pool.dtype))
        v_pool.index_copy_(0, meta.slot_mapping, v.to(v_pool.dtype))

        out = q.new_empty(num_tokens, num_heads, head_dim)
        nd = meta.num_decodes
        if nd:
            qd = q[:nd].view(nd, num_kv_heads, group, head_dim)
            kd = k_pool[meta.decode_slots].transpose(1, 2).to(q.dtype)  # [nd, kv_heads, seq, head_dim]
            vd = v_pool[meta.decode_slots].transpose(1, 2).to(q.dtype)
            od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=_decode_mask(meta, sliding_window), scale=scale)
            out[:nd] = od.reshape(nd, num_heads, head_dim)
        for span in meta.prefills:
            qs = q[span.token_start : span.token_end].transpose(0, 1).unsqueeze(0)  # [1, heads, q, d]
            if span.context_slots is None:
                ks = k[span.token_start : span.token_end]
                vs = v[span.token_start : span.token_end]
            else:
                ks = k_pool[span.context_slots].to(q.dtype)
                vs = v_pool[span.context_slots].to(q.dtype)
            mask = _prefill_mask(span, sliding_window, q.device)
            os_ = F.scaled_dot_product_attention(
                qs,
                ks.transpose(0, 1).unsqueeze(0),
                vs.transpose(0, 1).unsqueeze(0),
                attn_mask=mask,
                is_causal=mask is None,
                scale=scale,
                enable_gqa=True,
            )
            out[span.token_start : span.token_end] = os_[0].transpose(0, 1)
        return out.view(num_tokens, num_heads * head_dim)


def _decode_mask(meta: TorchAttentionMetadata, sliding_window: int | None) -> torch.Tensor:
    """The step's decode mask, narrowed to the window where some context is longer than it."""
    max_len = meta.decode_mask.shape[-1]
    if sliding_window is None or max_len <= sliding_window:
        return meta.decode_mask
    return causal_mask(meta.decode_lens - 1, max_len, sliding_window)[:, None, None, :]


def _prefill_mask(span: PrefillSpan, sliding_window: int | None, device: torch.device) -> torch.Tensor | None:
    """The chunk's mask (None: plain causal over its own k/v), narrowed to the window where the
    context is longer than it."""
    windowed = sliding_window_mask(span.context_len, span.token_end - span.token_start, sliding_window, device)
    return span.mask if windowed is None else windowed
