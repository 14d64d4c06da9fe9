"""The KV cache's blocks: who holds which, and which free block still holds a reusable prefix. Plain Python.

Block 0 is the null block (models/batch.py) and is never handed out. A block is held by every sequence whose
table names it (`refs`); when the last one lets go it becomes free. A free block whose keys form a whole,
computed block of some token prefix stays registered under that prefix's hash, so a later sequence with the
same prefix takes it back instead of recomputing it; it is overwritten only when nothing else is free, least
recently released first. Free blocks are handed out in this order: released ones that hold nothing reusable,
then registered ones (least recently released first), then never-used ones. On the CPU a block takes memory
when it is first written (models/batch.py), so the pool's memory is the most blocks the work held at once:
the prefix cache lives in the blocks that moment left free and never takes memory of its own, which would
otherwise grow, block by block, to the whole pool.
"""
from __future__ import annotations

from collections import OrderedDict


class BlockPool:
    def __init__(self, n_blocks: int):
        if n_blocks < 2:
            raise ValueError("a pool needs the null block and at least one more")
        self.n_blocks = n_blocks
        self.refs = [0] * n_blocks
        self.ready = [False] * n_blocks  # every position of the block is computed
        self._never_used = list(range(n_blocks - 1, 0, -1))  # pop() gives the lowest id
        self._spare: list[int] = []  # released, nothing reusable
        self._cached: OrderedDict[int, None] = OrderedDict()  # released, registered: least recently first
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}

    @property
    def num_free(self) -> int:
        return len(self._never_used) + len(self._spare) + len(self._cached)

    @property
    def num_used(self) -> int:
        return self.n_blocks - 1 - self.num_free

    @property
    def num_written(self) -> int:
        """Blocks ever handed out (the null block aside): on the CPU, the blocks that have taken memory."""
        return self.n_blocks - 1 - len(self._never_used)

    def take(self) -> int:
        """A free block for new keys (the caller checks num_free first); it holds nothing reusable any more."""
        if self._spare:
            block = self._spare.pop()
        elif self._cached:
            block, _ = self._cached.popitem(last=False)
            self.unregister(block)
        elif self._never_used:
            block = self._never_used.pop()
        else:
            raise RuntimeError("no free block")
        self.refs[block] = 1
        self.ready[block] = False
        return block

    def share(self, block: int) -> None:
        """One more holder of a registered block (taken back from the free blocks if nothing held it)."""
        if self.refs[block] == 0:
            del self._cached[block]
        self.refs[block] += 1

    def release(self, block: int) -> None:
        """One holder fewer; the last one frees it (kept for reuse if it is registered and computed)."""
        if block == 0 or self.refs[block] <= 0:
            raise ValueError(f"block {block} is not held")
        self.refs[block] -= 1
        if self.refs[block]:
            return
        if block in self._hash_of and self.ready[block]:
            self._cached[block] = None
        else:
            self.unregister(block)
            self._spare.append(block)

    def lookup(self, digest: bytes) -> int | None:
        return self._by_hash.get(digest)

    def register(self, block: int, digest: bytes) -> None:
        """Name a held block by the hash of the prefix it holds (the first block registered under it stays)."""
        if digest not in self._by_hash and block not in self._hash_of:
            self._by_hash[digest] = block
            self._hash_of[block] = digest

    def unregister(self, block: int) -> None:
        digest = self._hash_of.pop(block, None)
        if digest is not None and self._by_hash.get(digest) == block:
            del self._by_hash[digest]
