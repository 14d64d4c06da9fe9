"""The KV cache's block geometry, shared by the network (models/batch.py) and the engine's block manager
(which must not import torch): BLOCK_SIZE positions per block, block 0 the null block."""
from __future__ import annotations

# Positions per block: the decode key block (models/invariant_ops.py), so a decode step reads whole blocks,
# and a prefill key block is a whole number of them.
BLOCK_SIZE = 64
NULL_BLOCK = 0


def blocks_for(positions: int) -> int:
    """Blocks that hold `positions` positions."""
    return -(-positions // BLOCK_SIZE)
