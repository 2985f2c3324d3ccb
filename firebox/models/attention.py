"""The attention-backend interface: how a model layer reads and writes the paged KV cache.

It lives with the models because they are written against it: the engine's runner implements it
(`engine/runner/attention/`: `torch_ref`, `cpu_paged`) and hands a backend down, so imports point
from the engine to the models and never back.

A model never sees block tables. Each attention layer calls `backend.forward(q, k, v, kv_cache,
meta)` with the metadata built once per step by `backend.build_metadata`. Metadata is passed
explicitly down the forward call; there is no global attention context.

Each backend chooses the layout of one layer's KV tensor (`kv_cache_shape`; index 0 keys, 1
values); the portable one is `[2, num_blocks, block_size, num_kv_heads, head_dim]`. Whatever the
layout, a token at position `p` of a request lives in slot
`block_table[p // block_size] * block_size + p % block_size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True, slots=True)
class AttentionBatch:
    """One step's batch as the runner lays it out: requests in order, tokens flattened.

    Requests whose single query token extends an existing context (decodes) come first; the
    runner orders the batch so. Python lists: the backend turns them into device tensors once.
    """

    query_lens: list[int]  # new tokens per request this step
    context_lens: list[int]  # tokens already in the cache before this step (start position)
    block_tables: list[list[int]]
    block_size: int
    num_decodes: int  # the first `num_decodes` requests have query_len 1 and context_len > 0


class AttentionBackend(Protocol):
    """Paged attention for one device family. Implementations: `torch_ref` (any device) and
    `cpu_paged` (firebox's native CPU kernel)."""

    name: str  # as `DeviceConfig.attention_backend` names it: "torch" or "native"

    def kv_cache_shape(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[int, ...]:
        """Shape of one layer's KV tensor, keys and values together."""
        ...

    def allocate_kv_cache(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """One layer's KV tensor (zeroed unless the backend never reads a slot before writing it)."""
        ...

    def build_metadata(self, batch: AttentionBatch, device: torch.device) -> Any:
        """Turn the step's layout into the tensors `forward` needs (slot mapping, gather tables,
        masks). Called once per step, shared by every layer."""
        ...

    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, num_kv_heads, head_dim]
        meta: Any,
        scale: float,
        sliding_window: int | None = None,
    ) -> torch.Tensor:  # [num_tokens, num_heads * head_dim]
        """Write this step's k/v into the cache at the metadata's slots, then attend causally
        over each request's context: all of it, or with a sliding window only each query's last
        `sliding_window` positions (its own included)."""
        ...
