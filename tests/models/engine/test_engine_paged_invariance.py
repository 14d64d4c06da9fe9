"""The paged cache never changes an answer, on the real default model in float32 and bfloat16 (with the C decode
attention over an 8-bit cache too, the CPU's default, models/kv_int8.py): a greedy chat
gets the same tokens whether its system prompt's blocks come from the prefix cache (computed by a request of
the step before, or of the same step) or are computed afresh, and whether or not it was preempted when the
pool ran out and recomputed later."""
from __future__ import annotations

import copy

import pytest
import torch
from heavy_dtypes import HEAVY_DTYPES

from models.batch import BLOCK_SIZE, KVCache
from models.engine import Engine, EngineConfig
from models.engine.loading import load_tokenizer
from models.engine.types import GenerationRequest
from models.params import GenerationParams

pytestmark = pytest.mark.slow

SYSTEM = ("You are a patient assistant for a public library. Answer in plain words, keep to the facts you are "
          "sure of, say so when you do not know, and never invent titles, authors or dates. " * 4)
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three primary colors.",
             "Explain gravity to a child in one sentence.", "What is 12 times 7?", "Say hello in Spanish."]


INT8_CACHE = pytest.param("bfloat16-int8", marks=HEAVY_DTYPES[1].marks, id="bfloat16-int8-cache")


@pytest.fixture(scope="module", params=[*HEAVY_DTYPES, INT8_CACHE])
def engine_for(request, smollm, gguf_path):
    from models.fused_layers import use_native_attention

    dtype, _, kv = request.param.partition("-")
    net = smollm if dtype == "float32" else copy.deepcopy(smollm).to(torch.bfloat16)
    if kv == "int8":
        assert use_native_attention(net)
    tokenizer, template = load_tokenizer(gguf_path)
    engines = []

    def make(**kw) -> Engine:
        config = EngineConfig(**{"max_len": 512, "dtype": dtype, "kv_quantization": kv or "none", **kw})
        e = Engine(net, net.cfg, tokenizer, template, config)
        assert (e.cache_dtype is torch.int8) == (kv == "int8")
        engines.append(e)
        return e.start()

    yield make
    for e in engines:
        e.stop()


def _chat(rid: str, question: str, max_new_tokens: int) -> GenerationRequest:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return GenerationRequest(rid, GenerationParams(max_new_tokens=max_new_tokens, ignore_eos=True),
                             messages=messages)


def _alone(engine_for, reqs: list[GenerationRequest]) -> list[list[int]]:
    engine = engine_for(max_batch=1, prefix_cache_min=0)
    return [engine.submit(r).wait(300).token_ids for r in reqs]


def test_a_prefix_cache_hit_gives_the_answer_computed_afresh(engine_for):
    reqs = [_chat(f"q{i}", q, 12) for i, q in enumerate(QUESTIONS[:4])]
    alone = _alone(engine_for, reqs)
    engine = engine_for(prefill_chunk=64)
    first = engine.submit(reqs[0]).wait(300).token_ids  # its system prompt's blocks stay in the pool
    reused_before = engine.scheduler.blocks.reused_tokens
    handles = [engine.submit(r) for r in reqs[1:]]  # admitted together: they share blocks of the same step too
    assert [first] + [h.wait(300).token_ids for h in handles] == alone
    assert engine.scheduler.blocks.reused_tokens - reused_before >= 3 * 2 * BLOCK_SIZE


def test_a_preempted_sequence_recomputed_later_gives_the_answer_it_has_alone(engine_for):
    """A pool of one sequence of max_len (4 blocks of 64) for four chats of about 186 prompt tokens (two
    whole blocks of the shared system prompt) that each grow into a fourth block: the newest is preempted as
    the others grow, and recomputed when it returns (from its own cached blocks, generated tokens included)."""
    reqs = [_chat(f"p{i}", q, 30 + 8 * i) for i, q in enumerate(QUESTIONS[:4])]
    alone = _alone(engine_for, reqs)
    probe = engine_for(max_batch=1)
    per_block = KVCache.bytes_per_block(probe.config.num_layers, probe.config.num_kv_heads, probe.config.head_dim,
                                        probe.cache_dtype)
    engine = engine_for(max_len=256, kv_budget_bytes=(1 + 256 // BLOCK_SIZE) * per_block, prefill_chunk=64)
    handles = [engine.submit(r) for r in reqs]
    assert [h.wait(600).token_ids for h in handles] == alone
    assert engine.scheduler.num_preemptions > 0
