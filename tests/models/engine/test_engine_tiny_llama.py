"""The engine over the real Llama-family network with tiny random weights (float32, CPU)."""
from __future__ import annotations

import random

import pytest
import torch
from engine_toys import ALPHABET, TOY_VOCAB

from models.config import ModelConfig
from models.engine.types import GenerationRequest
from models.llama import LlamaNetwork
from models.params import GenerationParams


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = ModelConfig(architecture="llama", vocab_size=TOY_VOCAB, hidden_size=64, intermediate_size=128,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5,
                      rope_theta=10000.0, max_position_embeddings=512)
    net = LlamaNetwork(cfg).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)  # larger than default init: varied, non-degenerate outputs
    return cfg, net


@pytest.fixture
def make_engine(tiny_llama, toy_engine_factory):
    """make(**engine_config) -> a started Engine over the tiny Llama."""
    cfg, net = tiny_llama
    return lambda **kw: toy_engine_factory(net, cfg, **kw)


def _requests(n: int, rng_seed: int = 1, **params) -> list[GenerationRequest]:
    rng = random.Random(rng_seed)
    shared = "".join(rng.choice(ALPHABET) for _ in range(40))
    reqs = []
    for i in range(n):
        body = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 90)))
        p = GenerationParams(max_new_tokens=rng.randint(1, 60), ignore_eos=True, **params)
        reqs.append(GenerationRequest(f"r{i}", p, prompt=shared + body if i % 3 == 0 else body))
    return reqs


def test_32_greedy_requests_together_give_the_same_tokens_as_each_alone(make_engine):
    reqs = _requests(32)
    alone_engine = make_engine(max_batch=1, prefix_cache_min=0)
    alone = [alone_engine.submit(r).wait(60).token_ids for r in reqs]
    engine = make_engine(max_batch=12, prefill_chunk=24, prefix_cache_min=8)
    handles = [engine.submit(r) for r in reqs]
    assert [h.wait(60).token_ids for h in handles] == alone
    assert len(set(map(tuple, alone))) > 16  # the outputs are varied, not one repeated token


def test_seeded_sampled_request_gives_the_same_text_alone_and_in_a_batch_of_64(make_engine):
    mine = GenerationRequest("mine", GenerationParams(do_sample=True, seed=77, temperature=0.8, top_p=0.95,
                                                      max_new_tokens=40, ignore_eos=True), prompt="a seeded one")
    alone = make_engine().submit(mine).wait(60)
    engine = make_engine(max_batch=64)
    others = [engine.submit(r) for r in _requests(63, rng_seed=2, do_sample=True, seed=5)]
    together = engine.submit(mine)
    for h in others:
        h.wait(60)
    assert together.wait(60).text == alone.text and len(alone.token_ids) == 40
