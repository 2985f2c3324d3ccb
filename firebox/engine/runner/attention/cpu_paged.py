"""Paged attention on CPU with firebox's native kernel (`kernels/csrc/paged_attention.cpp`).

Decodes and prefill chunks that continue a cached context read their keys and values in place
from the block pool: no gather copy. Keys are stored transposed within each block
(`[num_blocks, kv_heads, head_dim, block_size]`) so that a block's scores are computed across SIMD
lanes; values stay `[num_blocks, kv_heads, block_size, head_dim]`. A fresh prompt (no cached
context) runs torch's fused causal SDPA over its own k/v, which is faster for long runs of queries.
A sliding window reaches the kernel as a bound on each query's first position, and the fresh
prompts as a banded mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from firebox.engine.runner.attention.torch_ref import _padded, sliding_window_mask
from firebox.models.attention import AttentionBatch


@dataclass(slots=True)
class FreshPrefill:
    token_start: int
    token_end: int


@dataclass(slots=True)
class CpuPagedMetadata:
    block_size: int
    slot_mapping: torch.Tensor  # [num_tokens] where each new token's k/v is written
    block_table: torch.Tensor  # [num_reqs, max_blocks]
    paged_tokens: torch.Tensor | None  # [num_paged] token indices for the paged kernel; None = a prefix
    num_paged: int
    token_row: torch.Tensor  # [num_paged] request row of each paged token
    kv_len: torch.Tensor  # [num_paged] positions each paged token may see (causal bound)
    fresh: list[FreshPrefill]


class CpuPagedAttentionBackend:
    name = "native"

    def allocate_kv_cache(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # Not zeroed (a tenth of a second of every start for the default pool): the native kernel
        # softmaxes and sums only positions below each token's kv_len, all written before they are
        # read; the lanes of unwritten slots in a block's scores are computed and never used.
        return torch.empty(shape, dtype=dtype, device=device)

    def kv_cache_shape(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
        return (2, num_blocks, num_kv_heads * head_dim * block_size)

    def build_metadata(self, batch: AttentionBatch, device: torch.device) -> CpuPagedMetadata:
        bs = batch.block_size
        paged, rows, lens, fresh, slots = [], [], [], [], []
        start = 0
        for i, (c, q) in enumerate(zip(batch.context_lens, batch.query_lens)):
            table = batch.block_tables[i]
            slots.extend(table[p // bs] * bs + p % bs for p in range(c, c + q))
            if c == 0 and q > 1:
                fresh.append(FreshPrefill(start, start + q))
            else:
                paged.extend(range(start, start + q))
                rows.extend([i] * q)
                lens.extend(range(c + 1, c + q + 1))
            start += q
        return CpuPagedMetadata(
            block_size=bs,
            slot_mapping=torch.tensor(slots, dtype=torch.long),
            block_table=_padded(batch.block_tables),  # [num_reqs, max_blocks]
            paged_tokens=None if paged == list(range(len(paged))) else torch.tensor(paged, dtype=torch.long),
            num_paged=len(paged),
            token_row=torch.tensor(rows, dtype=torch.long),
            kv_len=torch.tensor(lens, dtype=torch.long),
            fresh=fresh,
        )

    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,
        kv_cache: torch.Tensor,  # [2, num_blocks, num_kv_heads * head_dim * block_size]
        meta: CpuPagedMetadata,
        scale: float,
        sliding_window: int | None = None,
    ) -> torch.Tensor:  # [num_tokens, num_heads * head_dim]
        num_tokens, num_heads, head_dim = q.shape
        num_kv_heads, num_blocks = k.shape[1], kv_cache.shape[1]
        k_pool = kv_cache[0].view(num_blocks, num_kv_heads, head_dim, meta.block_size)
        v_pool = kv_cache[1].view(num_blocks, num_kv_heads, meta.block_size, head_dim)
        torch.ops.firebox.write_kv(k, v, k_pool, v_pool, meta.slot_mapping)  # widths convert in the kernel
        out = q.new_empty(num_tokens, num_heads, head_dim)
        if meta.num_paged:
            self._paged(q, k_pool, v_pool, out, meta, scale, sliding_window or 0)
        for span in meta.fresh:
            s, e = span.token_start, span.token_end
            mask = sliding_window_mask(0, e - s, sliding_window, q.device)  # None: plain causal
            out[s:e] = F.scaled_dot_product_attention(
                q[s:e].transpose(0, 1).unsqueeze(0),
                k[s:e].transpose(0, 1).unsqueeze(0),
                v[s:e].transpose(0, 1).unsqueeze(0),
                attn_mask=mask,
                is_causal=mask is None,
                scale=scale,
                enable_gqa=True,
            )[0].transpose(0, 1)
        return out.view(num_tokens, num_heads * head_dim)

    @staticmethod
    def _paged(q, k_pool, v_pool, out, meta: CpuPagedMetadata, scale: float, window: int) -> None:
        # fp32 queries read an fp32, fp16 or bf16 pool as it is; other pairs meet in the pool's dtype
        same_width = q.dtype == k_pool.dtype or q.dtype == torch.float32
        if meta.paged_tokens is None:  # the paged tokens lead the batch (decodes first): no copies
            q_in = q[: meta.num_paged] if same_width else q[: meta.num_paged].to(k_pool.dtype)  # strided view: fine
            out_part = out[: meta.num_paged] if out.dtype == q_in.dtype else torch.empty_like(q_in).contiguous()
        else:
            q_in = q.index_select(0, meta.paged_tokens)
            q_in = q_in if same_width else q_in.to(k_pool.dtype)
            out_part = torch.empty(q_in.shape, dtype=q_in.dtype)
        torch.ops.firebox.paged_attention(
            out_part, q_in, k_pool, v_pool, meta.block_table, meta.token_row, meta.kv_len, scale, window
        )
        if meta.paged_tokens is not None:
            out.index_copy_(0, meta.paged_tokens, out_part.to(out.dtype))
        elif out_part.data_ptr() != out.data_ptr():
            out[: meta.num_paged] = out_part
