"""One request can never fail another: bad requests are refused at submit, a sequence whose own processing
fails fails alone, and a failed forward fails only its step's sequences. On the toy network."""
from __future__ import annotations

import threading

import pytest
from engine_toys import TOY_VOCAB, ToyConfig, ToyDetokenizer, ToyNetwork

from models.engine.types import EngineError, GenerationRequest, InvalidRequest, PromptTooLong
from models.params import GenerationParams


def _req(rid: str, prompt: str = "the quick brown fox", **params) -> GenerationRequest:
    params.setdefault("ignore_eos", True)
    return GenerationRequest(rid, GenerationParams(**params), prompt=prompt)


def _poisoned(**fields) -> GenerationParams:
    """A record with values its constructor refuses, as one made or changed by hand (a stored row edited,
    a caller bypassing validation) would hold."""
    params = GenerationParams(do_sample=True, seed=1, max_new_tokens=5, ignore_eos=True)
    for name, value in fields.items():
        object.__setattr__(params, name, value)
    return params


def _alone(make, rid: str, **params) -> list[int]:
    return make().submit(_req(rid, **params)).wait(30).token_ids


@pytest.mark.parametrize("fields,field", [
    ({"top_k": 2**63}, "top_k"),  # the reported one: overflowed int64 in the sampler and failed the batch
    ({"top_k": TOY_VOCAB + 1}, "params.top_k"),
    ({"temperature": float("nan")}, "temperature"),
    ({"seed": 2**64}, "seed"),
    ({"stop_token_ids": (TOY_VOCAB,)}, "params.stop_token_ids"),
    ({"no_repeat_ngram_size": 10**6}, "no_repeat_ngram_size"),
])
def test_a_request_past_a_bound_is_refused_at_submit_naming_the_parameter(toy_engine_factory, fields, field):
    engine = toy_engine_factory()
    with pytest.raises(InvalidRequest, match=field):
        engine.submit(GenerationRequest("bad", _poisoned(**fields), prompt="abc"))
    assert engine.stats()["waiting"] == 0 and engine.stats()["running"] == 0


def test_max_new_tokens_past_the_engine_s_max_len_is_prompt_too_long(toy_engine_factory):
    engine = toy_engine_factory(max_len=64)
    with pytest.raises(PromptTooLong, match="max_new_tokens"):
        engine.submit(_req("a", prompt="abc", max_new_tokens=62))  # BOS + 3 tokens + 62 > 64
    assert engine.submit(_req("b", prompt="abc", max_new_tokens=60)).wait(10).completion_tokens == 60


def test_an_error_quotes_no_huge_number(toy_engine_factory):
    engine = toy_engine_factory()
    with pytest.raises(InvalidRequest, match="max_new_tokens") as caught:
        engine.submit(GenerationRequest("a", _poisoned(max_new_tokens=10**4000), prompt="abc"))
    assert len(str(caught.value)) < 200


def test_a_prompt_outside_the_network_s_vocabulary_is_refused_at_submit(toy_engine_factory):
    config = ToyConfig(vocab_size=20)  # the toy tokenizer's "z" is id 27
    engine = toy_engine_factory(ToyNetwork(config), config)
    with pytest.raises(InvalidRequest, match="vocabulary"):
        engine.submit(_req("bad", prompt="zzz", max_new_tokens=3))
    assert engine.submit(_req("ok", prompt="abc", max_new_tokens=3)).wait(10).completion_tokens == 3


def test_a_prompt_that_is_not_a_string_is_refused_at_submit(toy_engine_factory):
    engine = toy_engine_factory()
    with pytest.raises(InvalidRequest, match="prompt"):
        engine.submit(GenerationRequest("bad", GenerationParams(), prompt=12345))  # type: ignore[arg-type]


def test_a_request_with_a_priority_the_scheduler_cannot_order_is_refused_at_submit(toy_engine_factory):
    engine = toy_engine_factory(max_batch=1)
    running = engine.submit(_req("running", max_new_tokens=30))
    with pytest.raises(InvalidRequest, match="priority"):
        engine.submit(GenerationRequest("bad", GenerationParams(), prompt="abc", priority="high"))  # type: ignore
    assert running.wait(10).completion_tokens == 30


def test_a_sequence_whose_sampling_raises_fails_alone_and_the_batch_keeps_its_tokens(toy_engine_factory):
    alone = {f"g{i}": _alone(toy_engine_factory, f"g{i}", prompt=f"story {i}", max_new_tokens=30) for i in range(3)}
    engine = toy_engine_factory()
    good = {rid: engine.submit(_req(rid, prompt=f"story {rid[1]}", max_new_tokens=30)) for rid in alone}
    bad = engine.submit(_req("bad", max_new_tokens=30, do_sample=True, seed=3))
    bad._seq.params = _poisoned(top_k=2**63)  # past submit's checks: only the sampler meets it
    with pytest.raises(EngineError, match="Overflow"):
        bad.wait(30)
    for rid, handle in good.items():
        assert handle.wait(30).token_ids == alone[rid]


def test_a_sequence_whose_cancel_raises_fails_alone(toy_engine_factory):
    engine = toy_engine_factory()

    class BrokenFlush(ToyDetokenizer):
        def flush(self) -> str:
            raise UnicodeError("cannot flush")

    started = threading.Event()
    bad = engine.submit(_req("bad", max_new_tokens=200),
                        on_event=lambda e: started.set() if e.kind == "started" else None)
    bad._seq.detokenizer = BrokenFlush(engine.tokenizer)
    good = engine.submit(_req("good", max_new_tokens=40))
    assert started.wait(10)
    bad.cancel()
    with pytest.raises(EngineError, match="cannot flush"):
        bad.wait(10)
    assert good.wait(30).completion_tokens == 40


def test_a_failed_forward_fails_its_step_and_the_waiting_requests_run_as_if_alone(toy_engine_factory):
    net = ToyNetwork(ToyConfig())
    engine = toy_engine_factory(net, max_batch=1)
    expected = engine.submit(_req("before", prompt="waiting one", max_new_tokens=20)).wait(30).token_ids
    started = threading.Event()

    def on_event(event) -> None:
        if event.kind == "delta" and not started.is_set():
            started.set()

    running = engine.submit(_req("running", max_new_tokens=200), on_event=on_event)
    waiting = engine.submit(_req("waiting", prompt="waiting one", max_new_tokens=20))  # no slot: waits
    assert started.wait(10)
    net.fail_next = True
    with pytest.raises(EngineError, match="toy network failure"):
        running.wait(30)
    assert waiting.wait(30).token_ids == expected
