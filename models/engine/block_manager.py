"""Sequences' block tables over the pool, and prefix caching by whole blocks. Plain Python, no torch.

A sequence joining the batch gets the blocks of its prompt at once: first, block by block from the start,
blocks already in the pool that hold the same prefix (found by hash: a hash chain over the prefix's tokens
block by block, as nano-vllm's block manager does), then fresh ones. It takes one more block each time it
decodes past the end of its last. Its prompt's whole blocks are named by their hashes as soon as they are
taken, before they are computed, so a sequence admitted in the same step with the same prefix shares them:
it waits (its prefix is not ready) until their writer has computed them, in that step or a later one. A
block's keys are a function of its prefix's tokens and of how each position was computed (prefill or decode
arithmetic differ in their last bits), so a block's hash covers how many of its positions are prompt tokens:
a hit gives exactly the keys the sequence would have computed itself, and a prefix cache hit never changes
an answer. At least a prompt's last token is always computed, for its logits.
"""
from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence as Seq

from models.engine.block_pool import BlockPool
from models.engine.sequence import Sequence
from models.kv_blocks import BLOCK_SIZE, blocks_for


def block_digest(parent: bytes | None, tokens: Seq[int], prompt_positions: int) -> bytes:
    """The hash of a whole block: its parent block's hash, how many of its positions are prompt tokens
    (computed by prefill), and its tokens."""
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(prompt_positions.to_bytes(4, "little"))
    h.update(array("q", tokens).tobytes())
    return h.digest()


class BlockManager:
    def __init__(self, n_blocks: int, prefix_cache: bool = True):
        self.pool = BlockPool(n_blocks)
        self.prefix_cache = prefix_cache
        self.reused_tokens = 0  # tokens served from the prefix cache, for reports

    def _digest(self, seq: Sequence, i: int, parent: bytes | None) -> bytes:
        tokens = seq.token_ids((i + 1) * BLOCK_SIZE)[i * BLOCK_SIZE:]
        prompt_positions = min(BLOCK_SIZE, max(0, len(seq.prompt_ids) - i * BLOCK_SIZE))
        return block_digest(parent, tokens, prompt_positions)

    def allocate(self, seq: Sequence) -> bool:
        """Blocks for a sequence joining the batch (new, or back from a preemption): cached prefix blocks, then
        fresh blocks for the rest of its prompt. False, taking nothing, when the pool cannot hold them."""
        hits: list[int] = []
        hashes: list[bytes] = []
        if self.prefix_cache:
            parent = None
            for i in range((seq.num_tokens - 1) // BLOCK_SIZE):  # leave at least the last token to compute
                digest = self._digest(seq, i, parent)
                block = self.pool.lookup(digest)
                if block is None:
                    break
                hits.append(block)
                hashes.append(digest)
                parent = digest
        need = max(0, blocks_for(len(seq.prompt_ids)) - len(hits))
        if self.pool.num_free - sum(1 for b in hits if self.pool.refs[b] == 0) < need:
            return False
        for block in hits:
            self.pool.share(block)
        seq.blocks = hits + [self.pool.take() for _ in range(need)]
        seq.block_hashes = hashes
        seq.num_shared_blocks = len(hits)
        seq.prefix_ready = False
        seq.num_computed = len(hits) * BLOCK_SIZE
        self.reused_tokens += seq.num_computed
        if self.prefix_cache:  # name the prompt's other whole blocks now: sequences admitted with it may share them
            for i in range(len(hits), len(seq.prompt_ids) // BLOCK_SIZE):
                self._name(seq, i)
        return True

    def _name(self, seq: Sequence, i: int) -> None:
        if len(seq.block_hashes) == i:
            seq.block_hashes.append(self._digest(seq, i, seq.block_hashes[i - 1] if i else None))
        self.pool.register(seq.blocks[i], seq.block_hashes[i])

    def prefix_ready(self, seq: Sequence, completing: set[int]) -> bool:
        """The shared prefix blocks are computed, or will be by the end of the step being planned (blocks in
        `completing`: a layer writes all of a step's keys before any of its attention reads them)."""
        if not seq.prefix_ready:
            ready = self.pool.ready
            seq.prefix_ready = all(ready[b] for b in seq.blocks[:seq.num_shared_blocks])
            if not seq.prefix_ready:
                return all(ready[b] or b in completing for b in seq.blocks[:seq.num_shared_blocks])
        return True

    def ensure_block(self, seq: Sequence) -> bool:
        """A block for the position `seq` computes next; False when the pool has none free."""
        if seq.num_computed // BLOCK_SIZE < len(seq.blocks):
            return True
        if not self.pool.num_free:
            return False
        seq.blocks.append(self.pool.take())
        return True

    def computed(self, seq: Sequence, start: int, end: int) -> None:
        """Positions [start, end) of `seq` were computed by the last forward: blocks they filled are ready, and
        named for reuse."""
        for i in range(start // BLOCK_SIZE, end // BLOCK_SIZE):
            self.pool.ready[seq.blocks[i]] = True
            if self.prefix_cache:
                self._name(seq, i)

    def free(self, seq: Sequence) -> list[int]:
        """Let go of a sequence's blocks. Returns the blocks it was to compute that others share and that are
        not computed (orphans: a sharer must compute them itself); they are no longer named."""
        orphans = []
        # last block first, so a prefix's first blocks (the most shared: a system prompt) are the most recently
        # released and the last to be overwritten (block_pool.py)
        for i, block in reversed(list(enumerate(seq.blocks))):
            if i >= seq.num_shared_blocks and not self.pool.ready[block]:
                self.pool.unregister(block)
                if self.pool.refs[block] > 1:
                    orphans.append(block)
            self.pool.release(block)
        seq.blocks, seq.block_hashes, seq.num_shared_blocks, seq.prefix_ready = [], [], 0, False
        return orphans

    @staticmethod
    def adopt(seq: Sequence, orphans: set[int]) -> None:
        """`seq` shares some orphaned blocks: it computes them itself, from the first one on."""
        for j, block in enumerate(seq.blocks[:seq.num_shared_blocks]):
            if block in orphans:
                seq.num_computed = min(seq.num_computed, j * BLOCK_SIZE)
                seq.num_shared_blocks = j
                seq.prefix_ready = False
                return
