"""The engine with the real default model (SmolLM2-135M-Instruct, float32 CPU)."""
from __future__ import annotations

import copy
import time

import pytest
import torch
from heavy_dtypes import HEAVY_DTYPES

from models.engine import Engine, EngineConfig
from models.engine.loading import load_tokenizer
from models.engine.types import GenerationRequest
from models.params import GenerationParams

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three primary colors.",
           "Explain gravity to a child in one sentence.", "What is 12 times 7?", "Say hello in Spanish.",
           "Give me a short tip for sleeping well.", "Which planet is the largest?"]


@pytest.fixture(scope="module")
def make_engine(smollm, gguf_path):
    tokenizer, template = load_tokenizer(gguf_path)
    engines = []

    def make(**kw) -> Engine:
        e = Engine(smollm, smollm.cfg, tokenizer, template, EngineConfig(max_len=512, **kw))
        engines.append(e)
        return e.start()

    yield make
    for e in engines:
        e.stop()


# a system prompt longer than two KV blocks (64 positions each), so chats sharing it share whole cached blocks
SHARED_SYSTEM = ("You are a careful, friendly assistant. Answer in plain words, briefly, and say so when you do not "
                 "know. Prefer short sentences. Never invent facts, names or numbers. When a question is ambiguous, "
                 "answer the most likely reading and mention the other one. Keep lists short, and put the answer "
                 "first, then at most one sentence of explanation.")


def _chat(rid: str, text: str, system: str | None = None, **params) -> GenerationRequest:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return GenerationRequest(rid, GenerationParams(**params), messages=messages)


def test_capital_of_france_is_paris(make_engine):
    result = make_engine().submit(_chat("fr", PROMPTS[0], max_new_tokens=24)).wait(120)
    assert "Paris" in result.text
    assert result.prompt_tokens > 10 and result.finish_reason in ("eos", "length")


def test_greedy_chats_batched_together_equal_each_alone(make_engine):
    reqs = [_chat(f"c{i}", p, SHARED_SYSTEM, max_new_tokens=8 + 3 * i) for i, p in enumerate(PROMPTS)]
    alone_engine = make_engine(max_batch=1, prefix_cache_min=0)
    alone = [alone_engine.submit(r).wait(120).token_ids for r in reqs]
    engine = make_engine(prefill_chunk=64)  # chunked prompts and a shared system-prompt prefix
    handles = [engine.submit(r) for r in reqs]
    assert [h.wait(120).token_ids for h in handles] == alone
    assert engine.scheduler.blocks.reused_tokens > 0


def test_eos_ends_a_chat_reply_without_its_text(make_engine):
    result = make_engine().submit(_chat("col", "Name three primary colors.", max_new_tokens=64)).wait(120)
    assert result.finish_reason == "eos"
    assert "<|im_end|>" not in result.text and result.text.strip()


def test_stop_string_cuts_a_real_reply(make_engine):
    engine = make_engine()
    full = engine.submit(_chat("a", PROMPTS[0], max_new_tokens=24)).wait(120).text
    cut = engine.submit(_chat("b", PROMPTS[0], max_new_tokens=24, stop=("Paris",))).wait(120)
    assert cut.finish_reason == "stop" and cut.text == full[:full.index("Paris")]


@pytest.mark.parametrize("dtype", HEAVY_DTYPES)
def test_identical_greedy_prompts_get_identical_answers_whenever_they_join_the_batch(smollm, gguf_path, dtype):
    """Six copies of one greedy chat join a running batch at different steps, beside other chats of other
    lengths: each copy's prompt is cut into other chunks and decoded beside other neighbours, and all six
    answers are the same tokens (on an Intel Xeon, 4 of 6 differed before the network's products were made
    batch-invariant by construction)."""
    net = smollm if dtype == "float32" else copy.deepcopy(smollm).to(torch.bfloat16)
    tokenizer, template = load_tokenizer(gguf_path)
    engine = Engine(net, net.cfg, tokenizer, template, EngineConfig(max_len=512, dtype=dtype, prefill_chunk=48))
    engine.start()
    try:
        copies, others = [], []
        for i in range(6):
            copies.append(engine.submit(_chat(f"same{i}", "Explain why the sky is blue.", max_new_tokens=40)))
            others.append(engine.submit(_chat(f"other{i}", PROMPTS[i + 1], max_new_tokens=12 + 9 * i)))
            time.sleep(0.15 * i)  # later copies join a batch already decoding
        answers = [h.wait(300).token_ids for h in copies]
        for h in others:
            h.wait(300)
    finally:
        engine.stop()
    assert all(a == answers[0] for a in answers), [len(a) for a in answers]
