"""A CPU KV cache takes memory as its blocks are first written, not all at allocation, so a worker holds memory
for the work it has done rather than for the whole pool (models/batch.py)."""
from __future__ import annotations

import torch

from models.batch import BLOCK_SIZE, KVCache

MiB = 2**20
# 8 layers, 2 kv heads, 2049 blocks of 64 positions, head_dim 64, bfloat16: 256 MiB for k and as much for v
SHAPE = dict(n_layers=8, n_blocks=2049, n_kv_heads=2, head_dim=64, max_len=2048)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_a_cpu_kv_pool_takes_memory_only_for_the_blocks_written() -> None:
    before = _rss()
    cache = KVCache.pool(**SHAPE, dtype=torch.bfloat16)
    size = cache.k.numel() * cache.k.element_size() * 2
    assert size > 512 * MiB
    assert _rss() - before < 16 * MiB  # reserved, not taken
    # blocks 1..4 (256 positions) in every layer: 8 x 2 x 256 x 64 x 2 bytes each for k and v, 1 MiB in all
    cache.k[:, :, 1:5] = 1.0
    cache.v[:, :, 1:5] = -1.0
    assert _rss() - before < 16 * MiB
    # everything else reads as zeros (and reading takes no memory): never garbage, never NaN
    for layer in range(SHAPE["n_layers"]):
        for lo in range(5, SHAPE["n_blocks"], 256):  # a few blocks at a time: small temporaries
            assert not cache.k[layer, :, lo:lo + 256].any() and not cache.v[layer, :, lo:lo + 256].any()
        assert not cache.k[layer, :, 0].any()  # the null block
    assert bool((cache.k[:, :, 1:5] == 1).all()) and bool((cache.v[:, :, 1:5] == -1).all())
    assert _rss() - before < 32 * MiB


def test_fixed_slots_are_runs_of_blocks_of_their_own() -> None:
    cache = KVCache.allocate(n_layers=2, n_slots=3, n_kv_heads=1, max_len=16, head_dim=4)
    per_slot = 256 // BLOCK_SIZE  # a slot holds whole 256-position runs
    assert cache.slot_tables is not None and cache.slot_tables.tolist() == [
        [1 + s * per_slot + j for j in range(per_slot)] for s in range(3)]
    assert cache.n_blocks == 1 + 3 * per_slot
