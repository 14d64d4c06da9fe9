"""On the real default model, in float32 and in bfloat16, a sequence's logits are the same bits however its
step is made up: alone or beside others of other lengths, its prompt whole or in chunks. (Greedy answers
could otherwise change with load: in bfloat16, with only some of the network's measures in place, 12 to 16
of 32 benchmark prompts decoded differently in a batch of 64 than alone; with all of them, none.)"""
from __future__ import annotations

import copy

import pytest
import torch
from heavy_dtypes import HEAVY_DTYPES

from models.batch import BatchPlan, KVCache
from models.fused_layers import use_native_attention
from models.llama import LlamaNetwork

pytestmark = pytest.mark.slow

MAX_LEN = 256
LENGTHS = [40, 70, 55, 91, 5, 61, 130, 47]


@pytest.fixture(scope="module", params=[*HEAVY_DTYPES, *(pytest.param(f"{p.values[0]}-native-attention",
                                                                      marks=p.marks) for p in HEAVY_DTYPES[1:])])
def net(request, smollm: LlamaNetwork) -> LlamaNetwork:
    """float32, bfloat16, and bfloat16 with the C decode attention (models/fused_layers.use_native_attention)."""
    if request.param == "float32":
        return smollm
    net = copy.deepcopy(smollm).to(torch.bfloat16)
    if request.param.endswith("native-attention"):
        assert use_native_attention(net)
    return net


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(100, 40000, (n,), generator=g).tolist() for n in LENGTHS]


def _prefill(net, plans, cache, slot: int, ids: list[int], chunks: list[int] | None = None) -> torch.Tensor:
    start, logits = 0, None
    for n in chunks or [len(ids)]:
        logits = net(plans.prefill(ids[start:start + n], slot, start=start), cache)
        start += n
    return logits[0]


def test_a_prompt_in_chunks_gives_the_logits_of_the_whole(net, plans, prompts):
    ids = prompts[6]
    whole = _prefill(net, plans, net.new_cache(1, MAX_LEN), 0, ids)
    for chunks in ([64, 66], [1, 7, 100, 22], [33, 33, 33, 31], [129, 1], [2, 128]):
        assert torch.equal(_prefill(net, plans, net.new_cache(1, MAX_LEN), 0, ids, chunks), whole), chunks


def test_a_decode_step_alone_gives_the_logits_it_gets_beside_others(net, plans, prompts):
    n = len(prompts)
    cache = net.new_cache(n, MAX_LEN)
    for slot, ids in enumerate(prompts):
        _prefill(net, plans, cache, slot, ids)
    next_tokens = [int(t) for t in torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(1))]
    together = net(plans.decode(next_tokens, LENGTHS, list(range(n))), cache)
    for slot in (0, 4, 6):  # shortest beside longer ones, and the longest
        alone_cache = net.new_cache(1, MAX_LEN)
        _prefill(net, plans, alone_cache, 0, prompts[slot])
        alone = net(plans.decode([next_tokens[slot]], [LENGTHS[slot]], [0]), alone_cache)[0]
        assert torch.equal(alone, together[slot]), slot


def test_a_step_mixing_decode_and_prefill_gives_each_sequence_its_logits_alone(net, plans, prompts):
    """Decode rows beside a prompt being prefilled, and that prompt's chunk behind the decode rows: each part's
    rows land in other tiles than alone, and each gets its logits alone."""
    n = len(prompts) - 1  # the last prompt is prefilled in the mixed step
    cache = net.new_cache(n + 1, MAX_LEN)
    for slot, ids in enumerate(prompts[:n]):
        _prefill(net, plans, cache, slot, ids)
    next_tokens = list(range(1000, 1000 + n))
    decode = plans.decode(next_tokens, LENGTHS[:n], list(range(n)))
    chunk = plans.prefill(prompts[n], n)
    mixed = BatchPlan(token_ids=torch.cat([decode.token_ids, chunk.token_ids]),
                      positions=torch.cat([decode.positions, chunk.positions]),
                      slots=torch.cat([decode.slots, chunk.slots]), num_decode=n,
                      prefills=[(n, n, 0, len(prompts[n]))],
                      logits_rows=torch.cat([decode.logits_rows, chunk.logits_rows + n]))
    together = net(mixed, cache)
    alone_cache = net.new_cache(1, MAX_LEN)
    assert torch.equal(_prefill(net, plans, alone_cache, 0, prompts[n]), together[n])
    for slot in (0, 3):
        alone_cache = net.new_cache(1, MAX_LEN)
        _prefill(net, plans, alone_cache, 0, prompts[slot])
        alone = net(plans.decode([next_tokens[slot]], [LENGTHS[slot]], [0]), alone_cache)[0]
        assert torch.equal(alone, together[slot]), slot


def _paged(plan: BatchPlan, tables: torch.Tensor) -> BatchPlan:
    """The same step with its rows' blocks named by `tables` (rows = the plan's slots)."""
    return BatchPlan(plan.token_ids, plan.positions, plan.slots, plan.num_decode, plan.prefills, plan.logits_rows,
                     tables)


def test_a_sequence_s_logits_do_not_depend_on_which_blocks_of_the_pool_hold_it(net, plans, prompts):
    """The engine's pool hands out blocks in any order, and a block once held by one sequence serves another:
    a prompt prefilled in chunks and decoded in scattered, reversed blocks of a pool whose other blocks hold
    other sequences' keys gets the logits it gets in a run of blocks of its own."""
    ids = prompts[6]  # 130 tokens: 3 blocks, then decoding into a fourth
    alone_cache = net.new_cache(1, MAX_LEN)
    alone = [_prefill(net, plans, alone_cache, 0, ids, [64, 66])]
    pool = KVCache.pool(net.cfg.num_layers, 40, net.cfg.num_kv_heads, net.cfg.head_dim, MAX_LEN, net.dtype)
    pool.k.normal_()  # every block holds someone's keys (finite garbage); the null block is never read unmasked
    pool.v.normal_()
    scattered = torch.tensor([[37, 3, 21, 9]])  # its blocks, in position order
    paged = []
    start = 0
    for n in (64, 66):
        paged.append(net(_paged(plans.prefill(ids[start:start + n], 0, start=start), scattered), pool)[0])
        start += n
    for i, token in enumerate([1000, 2000, 3000]):
        alone.append(net(plans.decode([token], [len(ids) + i], [0]), alone_cache)[0])
        # beside a neighbour whose table names other blocks, the sequence in row 1
        step = plans.decode([5, token], [LENGTHS[0] + i, len(ids) + i], [0, 1])
        tables = torch.tensor([[11, 12, 13, 0], scattered[0].tolist()])
        paged.append(net(_paged(step, tables), pool)[1])
    assert torch.equal(paged[1], alone[0])
    for got, want in zip(paged[2:], alone[1:], strict=True):
        assert torch.equal(got, want)
