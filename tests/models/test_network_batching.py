"""One BatchPlan may hold many sequences: decode tokens of scattered slots and prefill chunks together.
Every sequence's logits must be what it gets alone, whatever else is in the step or in the cache."""
from __future__ import annotations

import pytest
import torch

from models.batch import BatchPlan
from models.config import ModelConfig
from models.fused_layers import FusedOps
from models.llama import LlamaNetwork

VOCAB = 96
MAX_LEN = 64


@pytest.fixture(scope="module", params=[(None, False), (6, False), (None, True), (6, True)],
                ids=["full_attention", "sliding_window_6", "fused_full_attention", "fused_sliding_window_6"])
def net(request, random_network) -> LlamaNetwork:
    """The torch layers, and the fused C operators of the q modes (models/fused_layers.py) on the same float32
    network: every case holds on both."""
    window, fused = request.param
    net = random_network(ModelConfig(architecture="mistral" if window else "llama", vocab_size=VOCAB,
                                     hidden_size=48, intermediate_size=80, num_layers=2, num_heads=6,
                                     num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0,
                                     max_position_embeddings=MAX_LEN, sliding_window=window))
    if fused:
        net.fused_ops = FusedOps()
    return net


def garbage_cache(net: LlamaNetwork, n_slots: int):
    """A cache full of large finite values: positions a sequence must not see are never zero by luck."""
    cache = net.new_cache(n_slots, MAX_LEN)
    cache.k.normal_(0, 50)
    cache.v.normal_(0, 50)
    return cache


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


PROMPTS = [tokens(n, seed) for seed, n in enumerate([3, 9, 17, 30])]
SLOTS = [6, 1, 4, 2]  # not contiguous, not sorted


def alone(net, plans, prompt, steps):
    return plans.greedy(net, prompt, steps, cache=garbage_cache(net, 1))


def test_decoding_together_in_scattered_slots_matches_each_sequence_alone(net, plans):
    steps = 12
    cache = garbage_cache(net, 8)
    nexts = []
    for prompt, slot in zip(PROMPTS, SLOTS, strict=True):
        nexts.append(int(net(plans.prefill(prompt, slot), cache)[0].argmax()))
    generated = [[t] for t in nexts]
    together = [[] for _ in PROMPTS]
    for step in range(steps - 1):
        positions = [len(p) + step for p in PROMPTS]
        logits = net(plans.decode([g[-1] for g in generated], positions, SLOTS), cache)
        for i, row in enumerate(logits):
            together[i].append(row)
            generated[i].append(int(row.argmax()))
    for i, prompt in enumerate(PROMPTS):
        expected_tokens, expected_logits = alone(net, plans, prompt, steps)
        assert generated[i] == expected_tokens
        torch.testing.assert_close(torch.stack(together[i]), torch.stack(expected_logits[1:]), atol=1e-4, rtol=1e-5)


def test_a_step_mixing_decode_tokens_and_prefill_chunks_matches_each_alone(net, plans):
    cache = garbage_cache(net, 8)
    # sequences 0 and 1 are decoding (prompt prefilled, one token chosen) ...
    first = [int(net(plans.prefill(PROMPTS[i], SLOTS[i]), cache)[0].argmax()) for i in (0, 1)]
    # ... sequence 3 had its first 10 prompt tokens prefilled in an earlier step
    net(plans.prefill(PROMPTS[3][:10], SLOTS[3], last_logits=False), cache)
    # one step: 2 decode tokens, then the rest of sequence 3's prompt, then the whole prompt of sequence 2
    rest3, p2 = PROMPTS[3][10:], PROMPTS[2]
    n3 = len(rest3)
    plan = BatchPlan(
        token_ids=torch.tensor(first + rest3 + p2),
        positions=torch.tensor([len(PROMPTS[0]), len(PROMPTS[1])] + list(range(10, 10 + n3)) + list(range(len(p2)))),
        slots=torch.tensor(SLOTS[:2] + [SLOTS[3]] * n3 + [SLOTS[2]] * len(p2)),
        num_decode=2,
        prefills=[(2, SLOTS[3], 10, n3), (2 + n3, SLOTS[2], 0, len(p2))],
        logits_rows=torch.tensor([0, 1, 2 + n3 - 1, 2 + n3 + len(p2) - 1]),
    )
    logits = net(plan, cache)
    assert logits.shape == (4, VOCAB)
    expected = [alone(net, plans, PROMPTS[i], 2)[1][1] for i in (0, 1)] + \
               [alone(net, plans, PROMPTS[i], 1)[1][0] for i in (3, 2)]
    torch.testing.assert_close(logits, torch.stack(expected), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 8, 16])
def test_prefill_in_chunks_equals_prefill_in_one_go(net, plans, chunk):
    prompt = PROMPTS[3]
    cache = garbage_cache(net, 3)
    for start in range(0, len(prompt), chunk):
        logits = net(plans.prefill(prompt[start:start + chunk], 2, start=start), cache)
    whole = garbage_cache(net, 1)
    expected = net(plans.prefill(prompt, 0), whole)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    for layer in range(net.cfg.num_layers):
        for chunked, one_go in zip(cache.slot(layer, 2), whole.slot(layer, 0), strict=True):
            torch.testing.assert_close(chunked[:, :len(prompt)], one_go[:, :len(prompt)], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("slots", [[7, 2, 5, 0], [0, 9, 30, 17]], ids=["scattered_dense", "scattered_sparse"])
def test_consecutive_and_scattered_decode_slots_give_the_same_logits(net, plans, slots):
    # consecutive slots are attended in place, dense ones through a slice with idle rows, sparse ones gathered
    results = []
    for layout in ([0, 1, 2, 3], slots):
        cache = garbage_cache(net, 32)
        for prompt, slot in zip(PROMPTS, layout, strict=True):
            net(plans.prefill(prompt, slot), cache)
        results.append(net(plans.decode([5, 6, 7, 8], [len(p) for p in PROMPTS], layout), cache))
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-6)


def test_logits_come_back_in_the_order_of_logits_rows(net, plans):
    cache = garbage_cache(net, 1)
    plan = plans.prefill(PROMPTS[2], 0)
    plan.logits_rows = torch.tensor([5, 0, 16])
    logits = net(plan, cache)
    torch.testing.assert_close(logits, net.forward_full(torch.tensor(PROMPTS[2]))[[5, 0, 16]], atol=1e-4, rtol=1e-5)


def test_a_position_beyond_the_cache_is_refused(net, plans):
    cache = net.new_cache(1, 8)
    with pytest.raises(ValueError, match="max_len"):
        net(plans.prefill(tokens(9, 0), 0), cache)


def test_a_plan_whose_chunks_do_not_cover_its_tokens_is_refused(net, plans):
    plan = plans.prefill(tokens(6, 0), 0)
    plan.prefills = [(0, 0, 0, 4)]
    with pytest.raises(ValueError, match="cover"):
        net(plan, net.new_cache(1, 8))
