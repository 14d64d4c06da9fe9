"""A CPU KV cache takes memory as its positions are first written, not all at allocation, so a worker holds
memory for the work it has done rather than for n_slots x max_len (models/batch.py)."""
from __future__ import annotations

import torch

from models.batch import KVCache

MiB = 2**20
# 8 layers, 64 slots, 2 kv heads, 2048 positions, head_dim 64, bfloat16: 256 MiB for k and as much for v
SHAPE = dict(n_layers=8, n_slots=64, n_kv_heads=2, max_len=2048, head_dim=64)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_a_cpu_kv_cache_takes_memory_only_for_the_positions_written() -> None:
    before = _rss()
    cache = KVCache.allocate(**SHAPE, dtype=torch.bfloat16)
    size = cache.k.numel() * cache.k.element_size() * 2
    assert size == 512 * MiB
    assert _rss() - before < 16 * MiB  # reserved, not taken
    # slot 0 writes 256 positions in every layer: 8 x 2 x 256 x 64 x 2 bytes each for k and v, 1 MiB in all
    cache.k[:, 0, :, :256] = 1.0
    cache.v[:, 0, :, :256] = -1.0
    assert _rss() - before < 16 * MiB
    # everything else reads as zeros (and reading takes no memory): never garbage, never NaN
    for layer in range(SHAPE["n_layers"]):  # a slot at a time: small temporaries
        for slot in range(1, SHAPE["n_slots"]):
            assert not cache.k[layer, slot].any() and not cache.v[layer, slot].any()
        assert not cache.k[layer, 0, :, 256:].any() and not cache.v[layer, 0, :, 256:].any()
    assert bool((cache.k[:, 0, :, :256] == 1).all()) and bool((cache.v[:, 0, :, :256] == -1).all())
    assert _rss() - before < 32 * MiB


def test_a_prefix_copied_between_slots_reads_back_equal() -> None:
    cache = KVCache.allocate(n_layers=2, n_slots=3, n_kv_heads=1, max_len=16, head_dim=4)
    cache.k[:, 0, :, :5] = torch.arange(2 * 5 * 4, dtype=torch.float32).view(2, 1, 5, 4)
    cache.copy_prefix(0, 2, 5)
    assert torch.equal(cache.k[:, 2, :, :5], cache.k[:, 0, :, :5]) and not cache.k[:, 2, :, 5:].any()
