"""Decode rows of very different lengths are attended in groups, each padded to its own longest row
(models/llama.py, decode_groups): the cut reads the fewest padded keys, and it never changes a row's bits."""
from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

import models.llama as llama
from models.config import ModelConfig
from models.llama import LlamaNetwork, decode_groups

MAX_LEN = 320


def cost(spans: list[int], groups: list[list[int]], overhead: int) -> int:
    return sum(len(g) * max(spans[i] for i in g) + overhead for g in groups)


def partitions(items: list[int]):
    """Every way to cut `items` into non-empty sets (brute force, for a few items)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first, *part[i]]] + part[i + 1:]
        yield [[first], *part]


@pytest.mark.parametrize("seed", range(40))
def test_the_cut_reads_the_fewest_padded_keys_and_takes_every_row_once(seed):
    rng = random.Random(seed)
    spans = [rng.randint(1, 9) for _ in range(rng.randint(1, 7))]
    overhead = rng.choice([0, 1, 3, 16])
    groups = decode_groups(spans, overhead)
    assert sorted(itertools.chain(*groups)) == list(range(len(spans)))
    assert all(g == sorted(g) for g in groups)
    assert cost(spans, groups, overhead) == min(cost(spans, p, overhead) for p in partitions(list(range(len(spans)))))


def test_alike_rows_and_a_lone_row_stay_one_group():
    assert decode_groups([3]) == [[0]]
    assert decode_groups([2, 2, 3, 2]) == [[0, 1, 2, 3]]
    short_and_long = decode_groups([1] * 20 + [5] * 20)
    assert short_and_long == [list(range(20)), list(range(20, 40))]


@pytest.fixture(scope="module")
def net(random_network) -> LlamaNetwork:
    return random_network(ModelConfig(architecture="llama", vocab_size=96, hidden_size=48, intermediate_size=80,
                                      num_layers=2, num_heads=6, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5,
                                      rope_theta=10000.0, max_position_embeddings=MAX_LEN))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_a_row_gets_the_same_bits_in_its_own_group_as_padded_to_the_longest_row(net, plans, monkeypatch, dtype):
    net = copy.deepcopy(net).to(dtype)
    cache = net.new_cache(6, MAX_LEN)
    cache.k.normal_(0, 3)
    cache.v.normal_(0, 3)
    positions = [5, 300, 70, 12, 250, 130]  # 1 to 5 key blocks
    plan = plans.decode([7, 3, 9, 1, 4, 2], positions, list(range(6)))
    monkeypatch.setattr(llama, "GROUP_OVERHEAD_BLOCKS", 10 ** 6)  # one group: every row reads 320 keys
    one_group = net(plan, cache)
    monkeypatch.setattr(llama, "GROUP_OVERHEAD_BLOCKS", 0)  # a group per length
    assert len(decode_groups([p // 64 + 1 for p in positions], 0)) == 5
    grouped = net(plan, cache)
    assert torch.equal(one_group, grouped)
