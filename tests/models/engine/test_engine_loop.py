"""The engine loop over a toy network: batching never changes a request's tokens; cancel, join, stops, errors."""
from __future__ import annotations

import logging
import random
import threading
import time

import pytest
from engine_toys import ALPHABET, ToyConfig, ToyNetwork

from models.engine import EngineConfig
from models.engine.engine import EngineConfigError
from models.engine.types import EngineError, EngineStopped, GenerationRequest, PromptTooLong
from models.params import GenerationParams


def _prompt(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def _req(rid: str, prompt: str, **params) -> GenerationRequest:
    params.setdefault("ignore_eos", True)
    return GenerationRequest(rid, GenerationParams(**params), prompt=prompt)


def _varied_requests(n: int, seed: int = 1) -> list[GenerationRequest]:
    rng = random.Random(seed)
    shared = _prompt(rng, 140)  # some prompts share two whole blocks, so the prefix cache is exercised
    reqs = []
    for i in range(n):
        body = _prompt(rng, rng.randint(1, 90))
        prompt = shared + body if i % 3 == 0 else body
        reqs.append(_req(f"r{i}", prompt, max_new_tokens=rng.randint(1, 40)))
    return reqs


def test_greedy_requests_batched_together_give_the_same_tokens_as_alone(toy_engine_factory):
    reqs = _varied_requests(32)
    alone_engine = toy_engine_factory(prefix_cache_min=0, max_batch=1)
    alone = [alone_engine.submit(r).wait(30).token_ids for r in reqs]
    # small slots count and prefill budget: requests wait, prompts are chunked, prefixes are reused
    together_engine = toy_engine_factory(max_batch=12, prefill_chunk=24, prefix_cache_min=8)
    handles = [together_engine.submit(r) for r in reqs]
    together = [h.wait(30).token_ids for h in handles]
    assert together == alone
    assert together_engine.scheduler.blocks.reused_tokens > 0


def test_length_limit_gives_exactly_max_new_tokens(toy_engine_factory):
    result = toy_engine_factory().submit(_req("a", "hello", max_new_tokens=7)).wait(10)
    assert result.finish_reason == "length" and result.completion_tokens == 7 == len(result.token_ids)


def test_seeded_sampled_request_gives_the_same_text_alone_and_in_a_batch_of_64(toy_engine_factory):
    params = dict(do_sample=True, seed=1234, temperature=0.9, top_p=0.95, max_new_tokens=30)
    alone = toy_engine_factory().submit(_req("x", "the same prompt", **params)).wait(10)
    engine = toy_engine_factory(max_batch=64)
    rng = random.Random(5)
    handles = [engine.submit(_req(f"o{i}", _prompt(rng, rng.randint(1, 50)), do_sample=True, seed=i,
                                  max_new_tokens=rng.randint(1, 40))) for i in range(63)]
    mine = engine.submit(_req("x", "the same prompt", **params))
    for h in handles:
        h.wait(30)
    assert mine.wait(30).text == alone.text and mine.wait().token_ids == alone.token_ids


def test_events_stream_exactly_the_result_text(toy_engine_factory):
    events = []
    result = toy_engine_factory().submit(_req("a", "stream me", max_new_tokens=20), events.append).wait(10)
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and set(kinds[1:-1]) <= {"delta"}
    assert "".join(e.text for e in events if e.kind == "delta") == result.text
    assert events[-1].result == result


def test_stop_string_ends_the_request_and_is_cut_from_text_and_stream(toy_engine_factory):
    engine = toy_engine_factory()
    full = engine.submit(_req("a", "find a stop", max_new_tokens=40)).wait(10).text
    stop = full[10:13]
    events = []
    result = engine.submit(_req("b", "find a stop", max_new_tokens=40, stop=(stop,)), events.append).wait(10)
    assert result.finish_reason == "stop"
    assert result.text == full[:full.index(stop)]
    assert "".join(e.text for e in events if e.kind == "delta") == result.text


def test_eos_ends_the_request_unless_ignore_eos(toy_engine_factory):
    engine = toy_engine_factory()
    r = engine.submit(_req("a", "abc", max_new_tokens=10, stop_token_ids=()))
    tokens = r.wait(10).token_ids
    # make the first generated token the "EOS" by declaring it a stop token id
    stopped = engine.submit(_req("b", "abc", max_new_tokens=10, stop_token_ids=(tokens[0],))).wait(10)
    assert stopped.finish_reason == "stop" and stopped.token_ids == tokens[:1] and stopped.text == ""


def test_cancel_mid_run_leaves_within_one_step_keeping_its_text(toy_engine_factory):
    engine = toy_engine_factory()
    deltas = []
    holder = {}

    def on_event(e):
        if e.kind == "delta":
            deltas.append(e.text)
            if len(deltas) == 5:
                holder["h"].cancel()

    holder["h"] = h = engine.submit(_req("a", "a long one", max_new_tokens=200), on_event)
    other = engine.submit(_req("b", "keeps going", max_new_tokens=30))
    result = h.wait(10)
    assert result.finish_reason == "canceled"
    assert 5 <= result.completion_tokens <= 6
    assert result.text == "".join(deltas)
    assert other.wait(10).completion_tokens == 30


def test_cancel_of_a_waiting_request_finishes_it_empty(toy_engine_factory):
    engine = toy_engine_factory(max_batch=1)
    first = engine.submit(_req("a", "first", max_new_tokens=100))
    second = engine.submit(_req("b", "second", max_new_tokens=5))
    second.cancel()
    assert second.wait(10).finish_reason == "canceled" and second.wait().completion_tokens == 0
    assert first.wait(10).completion_tokens == 100


def test_request_joins_a_running_batch_and_is_unaffected(toy_engine_factory):
    alone = toy_engine_factory().submit(_req("b", "late joiner", max_new_tokens=15)).wait(10)
    engine = toy_engine_factory()
    a_running, b_submitted = threading.Event(), threading.Event()
    order = []

    def on_a(e):
        order.append(("a", e.kind))
        if e.kind == "delta" and not a_running.is_set():
            a_running.set()
            b_submitted.wait(10)  # hold the engine thread until b is queued, so a is surely mid-run

    a = engine.submit(_req("a", "early bird", max_new_tokens=60), on_a)
    assert a_running.wait(10)
    b = engine.submit(_req("b", "late joiner", max_new_tokens=15), lambda e: order.append(("b", e.kind)))
    b_submitted.set()
    assert b.wait(10).token_ids == alone.token_ids
    a.wait(10)
    started_b = order.index(("b", "started"))
    assert ("a", "finished") in order[started_b:]  # b joined while a was still running


def test_prompt_too_long_is_refused_at_submit(toy_engine_factory):
    engine = toy_engine_factory(max_len=32)
    with pytest.raises(PromptTooLong):
        engine.submit(_req("a", "x" * 20, max_new_tokens=20))


def test_messages_are_rendered_with_the_chat_template(toy_engine_factory):
    engine = toy_engine_factory()
    msgs = [{"role": "user", "content": "hi"}]
    via_messages = engine.submit(GenerationRequest("m", GenerationParams(max_new_tokens=5), messages=msgs)).wait(10)
    via_prompt = engine.submit(_req("p", "user. hi!assistant.", max_new_tokens=5)).wait(10)
    assert via_messages.prompt_tokens == via_prompt.prompt_tokens - 1  # the raw prompt also gets a BOS
    assert via_messages.token_ids != [] and via_messages.completion_tokens == 5


def test_network_failure_fails_the_batch_with_a_clear_error_and_the_engine_goes_on(toy_engine_factory):
    net = ToyNetwork(ToyConfig())
    engine = toy_engine_factory(net)
    net.fail_next = True
    h = engine.submit(_req("a", "boom", max_new_tokens=5))
    with pytest.raises(EngineError, match="toy network failure"):
        h.wait(10)
    assert engine.submit(_req("b", "fine", max_new_tokens=5)).wait(10).completion_tokens == 5


def test_a_failing_request_fails_only_itself(toy_engine_factory):
    engine = toy_engine_factory()

    class Broken:
        def push(self, token_id):
            raise UnicodeError("bad bytes")

    bad = engine.submit(_req("bad", "abc", max_new_tokens=5))
    bad._seq.detokenizer = Broken()
    good = engine.submit(_req("good", "abc", max_new_tokens=5))
    with pytest.raises(EngineError, match="bad bytes"):
        bad.wait(10)
    assert good.wait(10).completion_tokens == 5


def test_a_raising_listener_does_not_fail_its_request(toy_engine_factory):
    def listener(e):
        raise RuntimeError("listener bug")

    assert toy_engine_factory().submit(_req("a", "abc", max_new_tokens=5), listener).wait(10).completion_tokens == 5


def test_stop_fails_unfinished_requests_and_refuses_new_ones(toy_engine_factory):
    engine = toy_engine_factory(max_batch=1)
    engine.submit(_req("a", "abc", max_new_tokens=200))
    waiting = engine.submit(_req("b", "abc", max_new_tokens=5))
    engine.stop()
    with pytest.raises(EngineStopped):
        waiting.wait(10)
    with pytest.raises(EngineStopped):
        engine.submit(_req("c", "abc", max_new_tokens=5))


def test_idle_engine_does_not_spin(toy_engine_factory):
    engine = toy_engine_factory()
    engine.submit(_req("a", "abc", max_new_tokens=3)).wait(10)
    cpu = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu < 0.05


def test_logprobs_are_reported_per_token(toy_engine_factory):
    result = toy_engine_factory().submit(_req("a", "abc", max_new_tokens=4, logprobs=2)).wait(10)
    assert len(result.logprobs) == 4
    first = result.logprobs[0]
    assert first["token_id"] == result.token_ids[0] and first["logprob"] <= 0 and len(first["top"]) == 2


@pytest.mark.parametrize("bad", [dict(max_batch=0), dict(dtype="int8"), dict(prefill_chunk=-1),
                                 dict(prefix_cache_min=-1), dict(kv_budget_bytes="1GB")])
def test_engine_config_refuses_invalid_settings(bad):
    with pytest.raises(EngineConfigError):
        EngineConfig(**bad)


def test_kv_budget_smaller_than_one_sequence_of_max_len_is_refused(toy_engine_factory):
    per_block = 2 * 1 * 1 * 64 * 16 * 4
    with pytest.raises(EngineConfigError, match="max_len"):
        toy_engine_factory(kv_budget_bytes=4 * per_block)  # max_len 256 needs 4 blocks and the null block


def test_the_pool_is_sized_by_the_kv_budget(toy_engine_factory):
    per_block = 2 * 1 * 1 * 64 * 16 * 4
    assert toy_engine_factory(kv_budget_bytes=12 * per_block + 5).n_blocks == 12


def test_without_a_budget_the_cache_is_sized_from_available_memory_and_logged(toy_engine_factory, caplog):
    with caplog.at_level(logging.INFO, logger="models.engine.engine"):
        engine = toy_engine_factory(max_batch=64)  # 64 sequences of 256 positions: 2 MiB, which any machine has
    assert engine.n_blocks == 1 + 64 * 4  # no more than a full batch of max_len can use
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("KV cache:"))
    assert "a pool of 256 blocks of 64 positions" in line and "MiB at most" in line
    assert "half the memory available" in line


def test_without_a_budget_a_slot_larger_than_the_machine_is_refused_naming_max_len(toy_engine_factory):
    huge = ToyConfig(max_position_embeddings=2**40)  # one slot: 2**40 positions, 128 TiB
    with pytest.raises(EngineConfigError, match="max_len"):
        toy_engine_factory(network=ToyNetwork(ToyConfig()), config=huge, max_len=2**40)
