"""The contract between the engine's scheduler and the network: one step's tokens and the paged KV cache.

The cache is one pool of fixed-size blocks of BLOCK_SIZE positions per layer. A sequence holds a block table:
its position p lives in block table[p // BLOCK_SIZE] at offset p % BLOCK_SIZE. Blocks are taken as a sequence
grows and returned when it ends (the engine's block manager decides which; models/engine/block_pool.py), so
memory follows the tokens held, and a block of a shared prefix can sit in many tables at once. Block 0 is the
null block: never written, it reads as zeros, and pads tables to a common width.

A step is a flat list of N tokens drawn from any number of sequences: one token for each decoding sequence,
and a chunk of prompt tokens for each sequence being prefilled. Each token names its row of the step's block
tables; the network writes its keys and values at its own position of that row's blocks and attends, for
each token, to positions 0..position of its own row only, so no sequence ever sees another's cache or any
padding. A block's place in the pool never changes a result: attention reads the blocks' keys in table order.
"""
from __future__ import annotations

import math
import mmap
from dataclasses import dataclass

import torch

from models import kv_int8
from models.kv_blocks import BLOCK_SIZE, NULL_BLOCK, blocks_for

__all__ = ["BLOCK_SIZE", "NULL_BLOCK", "BatchPlan", "KVCache", "blocks_for", "slot_positions"]

# Fixed slots (KVCache.allocate, for callers that lay sequences out by slot) hold a whole number of this many
# positions, so a prefill key block never reaches past a slot's own blocks.
SLOT_ALIGN = 256


def slot_positions(max_len: int) -> int:
    """Positions a fixed slot holds for sequences of up to max_len: max_len rounded up to whole SLOT_ALIGNs."""
    return -(-max_len // SLOT_ALIGN) * SLOT_ALIGN


@dataclass
class KVCache:
    """Keys and values for every layer: k, v (n_layers, n_kv_heads, n_blocks, BLOCK_SIZE, head_dim) each; in
    int8, (..., head_dim + 4): each row's codes then its float32 scale (models/kv_int8.py).

    max_len: the most positions one sequence may reach. slot_tables: (n_slots, blocks per slot) when the cache
    was made by `allocate` (fixed slots, each its own run of blocks): a plan without block tables then names
    slots; None for a pool whose tables the engine hands in with each plan."""

    k: torch.Tensor
    v: torch.Tensor
    max_len: int
    slot_tables: torch.Tensor | None = None

    @classmethod
    def pool(cls, n_layers: int, n_blocks: int, n_kv_heads: int, head_dim: int, max_len: int,
             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> KVCache:
        """A pool of n_blocks blocks (block 0, the null block, included), zeros. On the CPU, memory the OS
        commits page by page as blocks are first written (see _zeros_committed_on_write). dtype int8: the 8-bit
        cache of models/kv_int8.py (a zero row reads as zeros: codes and scale 0)."""
        width = kv_int8.row_bytes(head_dim) if dtype is torch.int8 else head_dim
        shape = (n_layers, n_kv_heads, n_blocks, BLOCK_SIZE, width)
        if torch.device(device).type != "cpu":
            # device memory is committed at allocation whatever the call; zeros keep never-written keys finite
            return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device),
                       max_len)
        return cls(_zeros_committed_on_write(shape, dtype), _zeros_committed_on_write(shape, dtype), max_len)

    @classmethod
    def allocate(cls, n_layers: int, n_slots: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> KVCache:
        """A pool laid out as n_slots fixed slots of max_len positions (rounded up to whole SLOT_ALIGNs): slot s
        is blocks 1 + s * W .. (s + 1) * W, W = blocks per slot. For plans that name slots (tests, benches)."""
        per_slot = slot_positions(max_len) // BLOCK_SIZE
        cache = cls.pool(n_layers, 1 + n_slots * per_slot, n_kv_heads, head_dim, max_len, dtype, device)
        cache.slot_tables = 1 + torch.arange(n_slots * per_slot, device=device).view(n_slots, per_slot)
        return cache

    @staticmethod
    def bytes_per_block(n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        width = kv_int8.row_bytes(head_dim) if dtype is torch.int8 else head_dim
        return 2 * n_layers * n_kv_heads * BLOCK_SIZE * width * torch.empty((), dtype=dtype).element_size()

    @property
    def n_blocks(self) -> int:
        return self.k.shape[2]

    @property
    def quantized(self) -> bool:
        """Whether keys and values are held in 8 bits (models/kv_int8.py)."""
        return self.k.dtype is torch.int8

    @property
    def head_dim(self) -> int:
        return kv_int8.head_dim_of(self.k.shape[-1]) if self.quantized else self.k.shape[-1]

    def slot(self, layer: int, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (KV, positions, hd) of a fixed slot (a copy of its blocks, in order; float32 values
        when the cache is in int8)."""
        if self.slot_tables is None:
            raise ValueError("this cache has no fixed slots")
        blocks = self.slot_tables[slot]
        kvh, width = self.k.shape[1], self.k.shape[-1]
        k, v = self.k[layer][:, blocks].reshape(kvh, -1, width), self.v[layer][:, blocks].reshape(kvh, -1, width)
        return (kv_int8.dequantize_rows(k), kv_int8.dequantize_rows(v)) if self.quantized else (k, v)


def _zeros_committed_on_write(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of zeros in a private anonymous mapping: it reads as zeros and the OS gives it memory one
    page at a time, on first write. torch.zeros writes (so commits) every page at once, and torch.empty may
    hand back reused memory, whose garbage could be NaN: attention reads whole blocks of positions, and a
    masked position's weight 0 times NaN is NaN."""
    count = math.prod(shape)
    buffer = mmap.mmap(-1, count * torch.empty((), dtype=dtype).element_size(),
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(buffer, dtype=dtype, count=count).view(shape)  # the tensor keeps the mapping alive


@dataclass
class BatchPlan:
    """One forward step. Tokens are laid out as decode tokens first, then prefill chunks.

    token_ids, positions, slots: (N,) int64 — every token of the step, its position in its sequence and its
      sequence's row of `block_tables` (a fixed slot of the cache when block_tables is None).
    num_decode: the first `num_decode` tokens are single decode tokens, one per sequence, in distinct rows.
    prefills: for each prefill chunk, (offset into the flat tokens, row, start position, length);
      a chunk attends causally to its own row's positions [0, start + length).
    logits_rows: (R,) int64 — which flat rows need logits (decode tokens that sample, and the last token of a
      prefill chunk that ends its prompt); the forward returns logits of shape (R, vocab) in this order.
    block_tables: (rows, W) int64 — each row's blocks in position order, padded with NULL_BLOCK; None: the
      cache's fixed slots.
    """

    token_ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    num_decode: int
    prefills: list[tuple[int, int, int, int]]
    logits_rows: torch.Tensor
    block_tables: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    def tables(self, cache: KVCache) -> torch.Tensor:
        """The step's block tables: its own, or the cache's fixed slots."""
        tables = self.block_tables if self.block_tables is not None else cache.slot_tables
        if tables is None:
            raise ValueError("plan: no block tables, and the cache has no fixed slots")
        return tables

    def cache_index(self, cache: KVCache) -> torch.Tensor:
        """(N,) each token's flat index into a layer's (n_blocks * BLOCK_SIZE) positions: where it is written."""
        tables = self.tables(cache)
        if self.num_tokens and int((self.positions // BLOCK_SIZE).max()) >= tables.shape[1]:
            raise ValueError("plan: a position is beyond its block table")
        blocks = tables[self.slots, self.positions // BLOCK_SIZE]
        return blocks * BLOCK_SIZE + self.positions % BLOCK_SIZE
