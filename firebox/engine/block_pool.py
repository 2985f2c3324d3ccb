"""The KV block pool: ids only (the tensors live in the runner), a free list, ref counts, and the
prefix-cache index from block hash to block.

A freed block that holds a full, hashed block of tokens stays in the index: it is free (it may be
handed out and overwritten) but a later request with the same prefix can take it back instead of
recomputing it. Eviction follows the free list's order: blocks without a hash go first, then
hashed blocks least recently freed first.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import blake2b


def hash_block_tokens(parent_hash: bytes | None, token_ids: Sequence[int], salt: str | None = None) -> bytes:
    """Hash of a full block: chains the parent block's hash, so equal hashes mean equal prefixes.

    The salt (a future cache-isolation key) enters the first block only; the chain carries it on.
    A cryptographic hash, because a collision would serve one request another's KV.
    """
    h = blake2b(digest_size=16)
    if parent_hash is None:
        h.update(b"\x00" if salt is None else b"\x01" + salt.encode())
    else:
        h.update(parent_hash)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


@dataclass(eq=False, slots=True)
class KVBlock:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None  # set once the block is full and its KV written


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be positive")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        # Free blocks in eviction order (first = next handed out). OrderedDict: O(1) removal
        # when a cached block is taken back from the middle.
        self._free: OrderedDict[int, KVBlock] = OrderedDict((b.block_id, b) for b in self.blocks)
        self._cached: dict[bytes, KVBlock] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached-but-free blocks count as free)."""
        return 1.0 - len(self._free) / self.num_blocks

    def get_cached(self, block_hash: bytes) -> KVBlock | None:
        return self._cached.get(block_hash) if self.enable_caching else None

    def touch(self, blocks: Iterable[KVBlock]) -> None:
        """Take a reference on cached blocks (a prefix hit), taking free ones off the free list."""
        for block in blocks:
            if block.ref_count == 0:
                del self._free[block.block_id]
            block.ref_count += 1

    def allocate(self, num_blocks: int) -> list[KVBlock]:
        if num_blocks > len(self._free):
            raise ValueError(f"asked for {num_blocks} blocks, {len(self._free)} free")
        out = []
        for _ in range(num_blocks):
            _, block = self._free.popitem(last=False)
            self._evict(block)
            block.ref_count = 1
            out.append(block)
        return out

    def free(self, blocks: Iterable[KVBlock]) -> None:
        """Drop a reference on each block. Callers pass a request's blocks tail first, so that
        the end of a sequence (least likely shared) is evicted before its start."""
        for block in blocks:
            if block.ref_count <= 0:
                raise ValueError(f"block {block.block_id} freed more often than taken")
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block.block_id] = block
                if block.block_hash is None:
                    self._free.move_to_end(block.block_id, last=False)  # nothing to keep: reuse first

    def cache(self, block: KVBlock, block_hash: bytes) -> None:
        """Index a full block by its hash. A second block with a hash already indexed (the same
        prefix computed twice) stays out of the index and is reused as a plain block."""
        if not self.enable_caching or block.block_hash is not None or block_hash in self._cached:
            return
        block.block_hash = block_hash
        self._cached[block_hash] = block

    def _evict(self, block: KVBlock) -> None:
        if block.block_hash is not None:
            if self._cached.get(block.block_hash) is block:
                del self._cached[block.block_hash]
            block.block_hash = None
