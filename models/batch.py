"""The contract between the engine's scheduler and the network: one step's tokens and the KV cache.

The cache is allocated once, as slots: every running sequence owns one slot of `max_len` positions,
for its whole life. A step is a flat list of N tokens drawn from any number of sequences: one token for
each decoding sequence, and a chunk of prompt tokens for each sequence being prefilled. The network
writes each token's keys and values at (slot, position) and attends, for each token, to positions
0..position of its own slot only, so no sequence ever sees another's cache or any padding.
"""
from __future__ import annotations

import math
import mmap
from dataclasses import dataclass

import torch

# Every slot holds a whole number of this many positions (max_len is rounded up): attention reads keys in
# whole blocks (models/invariant_ops.py), and a block must never be cut short by the end of a slot.
SLOT_ALIGN = 256


def slot_positions(max_len: int) -> int:
    """Positions a slot holds for sequences of up to max_len: max_len rounded up to whole SLOT_ALIGNs."""
    return -(-max_len // SLOT_ALIGN) * SLOT_ALIGN


@dataclass
class KVCache:
    """Keys and values for every layer and slot: (n_layers, n_slots, n_kv_heads, capacity, head_dim) each, for
    sequences of up to `max_len` positions; capacity is max_len rounded up to whole SLOT_ALIGNs."""

    k: torch.Tensor
    v: torch.Tensor
    max_len: int

    @classmethod
    def allocate(cls, n_layers: int, n_slots: int, n_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> KVCache:
        """Zeros of that shape (max_len rounded up to whole SLOT_ALIGNs); on the CPU, memory the OS commits page
        by page as positions are first written, so a worker holds what its sequences reached, not
        n_slots x max_len (see _zeros_committed_on_write)."""
        shape = (n_layers, n_slots, n_kv_heads, slot_positions(max_len), head_dim)
        if torch.device(device).type != "cpu":
            # device memory is committed at allocation whatever the call; zeros keep never-written keys finite
            return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device),
                       max_len)
        return cls(_zeros_committed_on_write(shape, dtype), _zeros_committed_on_write(shape, dtype), max_len)

    @staticmethod
    def bytes_per_slot(n_layers: int, n_kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype) -> int:
        positions = slot_positions(max_len)
        return 2 * n_layers * n_kv_heads * positions * head_dim * torch.empty((), dtype=dtype).element_size()

    @property
    def n_slots(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def copy_prefix(self, src_slot: int, dst_slot: int, length: int) -> None:
        """Reuse a cached prompt prefix: positions [0, length) of src become those of dst."""
        self.k[:, dst_slot, :, :length] = self.k[:, src_slot, :, :length]
        self.v[:, dst_slot, :, :length] = self.v[:, src_slot, :, :length]


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

    token_ids, positions, slots: (N,) int64 — every token of the step, its position in its sequence and its slot.
    num_decode: the first `num_decode` tokens are single decode tokens, one per sequence, in distinct slots.
    prefills: for each prefill chunk, (offset into the flat tokens, slot, start position, length);
      a chunk attends causally to its own slot's positions [0, start + length).
    logits_rows: (R,) int64 — which flat rows need logits (each decode token, and the last token of a
      prefill chunk that ends its prompt); the forward returns logits of shape (R, vocab) in this order.
    """

    token_ids: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    num_decode: int
    prefills: list[tuple[int, int, int, int]]
    logits_rows: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])
