"""Per-request block tables over the block pool, with automatic prefix caching.

A request's full blocks are hashed as a chain (`block_pool.hash_block_tokens`). Before a request
is first scheduled, `match_prefix` takes the longest run of its leading blocks found in the pool's
index; those tokens count as computed. The scheduler then `allocate`s room for the tokens of each
step, all or nothing, and `cache_full_blocks` indexes the blocks those tokens fill.
"""

from __future__ import annotations

from dataclasses import dataclass

from firebox.config import CacheConfig
from firebox.engine.block_pool import BlockPool, KVBlock, hash_block_tokens
from firebox.engine.request import Request


@dataclass(slots=True)
class PrefixCacheStats:
    """Counters in tokens, as vLLM's `prefix_cache_queries` / `prefix_cache_hits`."""

    queries: int = 0
    hits: int = 0

    def record(self, num_query_tokens: int, num_hit_tokens: int) -> None:
        self.queries += num_query_tokens
        self.hits += num_hit_tokens


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    def __init__(self, config: CacheConfig, num_blocks: int) -> None:
        self.block_size = config.block_size
        self.enable_caching = config.enable_prefix_caching
        self.pool = BlockPool(num_blocks, config.enable_prefix_caching)
        self.prefix_stats = PrefixCacheStats()
        self._blocks: dict[str, list[KVBlock]] = {}
        self._num_indexed_blocks: dict[str, int] = {}  # leading blocks already in the pool's index

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def max_num_tokens(self) -> int:
        """The most tokens one request can hold: the whole pool."""
        return self.pool.num_blocks * self.block_size

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return self.pool.usage

    def num_blocks_for(self, num_tokens: int) -> int:
        return cdiv(num_tokens, self.block_size)

    def match_prefix(self, req: Request) -> int:
        """Take the cached leading blocks of a request that holds none; returns the number of
        tokens they cover. Block-aligned, and never every token: the last one must be computed
        so that there are logits to sample from. Skipped while prompt logprobs are wanted, which
        need the logits of every prompt position."""
        if req.block_ids:
            raise ValueError(f"request {req.request_id} already holds blocks")
        self._blocks[req.request_id] = []
        if not self.enable_caching or req.needs_prompt_logprobs:
            return 0
        self._update_block_hashes(req)
        hits: list[KVBlock] = []
        for block_hash in req.block_hashes[: (req.num_tokens - 1) // self.block_size]:
            block = self.pool.get_cached(block_hash)
            if block is None:
                break
            hits.append(block)
        self.pool.touch(hits)
        self._blocks[req.request_id] = hits
        self._num_indexed_blocks[req.request_id] = len(hits)
        req.block_ids = [b.block_id for b in hits]
        return len(hits) * self.block_size

    def allocate(self, req: Request, num_new_tokens: int) -> bool:
        """Make room for `num_new_tokens` past `req.num_computed_tokens`; False (and nothing
        taken) when the pool has too few free blocks."""
        blocks = self._blocks.setdefault(req.request_id, [])
        num_needed = self.num_blocks_for(req.num_computed_tokens + num_new_tokens) - len(blocks)
        if num_needed <= 0:
            return True
        if num_needed > self.pool.num_free_blocks:
            return False
        new_blocks = self.pool.allocate(num_needed)
        blocks.extend(new_blocks)
        req.block_ids.extend(b.block_id for b in new_blocks)
        return True

    def cache_full_blocks(self, req: Request, num_tokens: int | None = None) -> None:
        """Index the request's blocks that are full within its first `num_tokens` tokens
        (default: its computed tokens), so that other requests can share them."""
        if not self.enable_caching:
            return
        num_tokens = req.num_computed_tokens if num_tokens is None else num_tokens
        blocks = self._blocks.get(req.request_id, [])
        num_full = min(min(num_tokens, req.num_tokens) // self.block_size, len(blocks))
        start = self._num_indexed_blocks.get(req.request_id, 0)
        if num_full <= start:
            return
        self._update_block_hashes(req)
        for i in range(start, num_full):
            self.pool.cache(blocks[i], req.block_hashes[i])
        self._num_indexed_blocks[req.request_id] = num_full

    def trim(self, req: Request) -> None:
        """Give back the blocks past the request's tokens (those rejected drafts were written
        to); they were never indexed, so nothing cached goes with them."""
        blocks = self._blocks.get(req.request_id, [])
        num_kept = max(self.num_blocks_for(req.num_tokens), self._num_indexed_blocks.get(req.request_id, 0))
        if len(blocks) > num_kept:
            extra = blocks[num_kept:]
            del blocks[num_kept:]
            del req.block_ids[num_kept:]
            self.pool.free(reversed(extra))

    def free(self, req: Request) -> None:
        """Give back every block of the request (tail first); hashed ones stay cached."""
        blocks = self._blocks.pop(req.request_id, [])
        self._num_indexed_blocks.pop(req.request_id, None)
        self.pool.free(reversed(blocks))
        req.block_ids = []

    def _update_block_hashes(self, req: Request) -> None:
        hashes, tokens, size = req.block_hashes, req.all_token_ids, self.block_size
        while len(hashes) < len(tokens) // size:
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block_tokens(parent, tokens[i * size : (i + 1) * size], req.cache_salt))
