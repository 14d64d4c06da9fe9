"""The sampler's processors agree with transformers' LogitsProcessor classes, row by row, on mixed batches."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from models.engine.sampling import (
    Sampler,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    banned_ngram_tokens,
)
from models.params import GenerationParams

VOCAB = 1000


@dataclass
class Row:
    params: GenerationParams
    prompt_ids: list[int] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=g) * 3


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(a), torch.isinf(b)), "masked sets differ"
    assert torch.equal(a[torch.isfinite(a)], b[torch.isfinite(b)])


def test_temperature_matches_transformers_per_row():
    x = _logits(4)
    temps = [0.3, 1.0, 1.7, 0.05]
    got = apply_temperature(x, torch.tensor(temps))
    for i, t in enumerate(temps):
        _same(got[i:i + 1], TemperatureLogitsWarper(t)(None, x[i:i + 1]))


def test_top_k_matches_transformers_per_row_with_mixed_k():
    x = _logits(5)
    x[0, :10] = 2.5  # ties at the k-th value are kept by both
    ks = [1, 7, 0, 50, VOCAB + 5]
    got = apply_top_k(x, torch.tensor(ks))
    for i, k in enumerate(ks):
        want = x[i:i + 1] if k == 0 else TopKLogitsWarper(min(k, VOCAB))(None, x[i:i + 1])
        _same(got[i:i + 1], want)


def test_top_p_matches_transformers_per_row_with_mixed_p():
    x = _logits(5)
    ps = [0.9, 1.0, 0.5, 0.01, 0.999]
    got = apply_top_p(x, ps)
    for i, p in enumerate(ps):
        want = x[i:i + 1] if p >= 1.0 else TopPLogitsWarper(p)(None, x[i:i + 1])
        _same(got[i:i + 1], want)


def test_min_p_matches_transformers_per_row_with_mixed_min_p():
    x = _logits(4)
    mps = [0.0, 0.05, 0.3, 1.0]
    got = apply_min_p(x, torch.tensor(mps))
    for i, mp in enumerate(mps):
        _same(got[i:i + 1], MinPLogitsWarper(mp)(None, x[i:i + 1]))


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_matches_transformers_including_prompt_tokens(penalty):
    x = _logits(1)[0]
    seen = [3, 17, 17, 999, 0, 512]
    want = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([seen]), x[None].clone())[0]
    row = x.clone()
    apply_repetition_penalty(row, seen, penalty)
    _same(row, want)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_bans_the_same_tokens_as_transformers(n):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 6, (1, 40), generator=g)  # a small alphabet so n-grams repeat
    x = _logits(1)
    want = NoRepeatNGramLogitsProcessor(n)(ids, x.clone())[0]
    row = x[0].clone()
    banned = banned_ngram_tokens(ids[0].tolist(), n)
    if banned:
        row[torch.tensor(banned)] = float("-inf")
    _same(row, want)


def test_min_new_tokens_suppresses_eos_and_stop_ids_like_transformers():
    x = _logits(1)
    params = GenerationParams(min_new_tokens=3, stop_token_ids=(5,))
    row = Row(params, prompt_ids=[1, 2], output_ids=[9])
    sampler = Sampler(eos_token_ids=[7, 8])
    out = sampler.sample(x.clone(), [row])
    want = MinNewTokensLengthLogitsProcessor(2, 3, [7, 8, 5])(torch.tensor([[1, 2, 9]]), x.clone())
    assert out.token_ids[0] == int(want.argmax())
    assert sampler.suppressed_ids(row) and set(sampler.suppressed_ids(row)) == {5, 7, 8}


def test_min_new_tokens_stops_suppressing_once_reached():
    row = Row(GenerationParams(min_new_tokens=1), output_ids=[4])
    assert Sampler([7]).suppressed_ids(row) == []


def test_ignore_eos_does_not_suppress_eos_before_min_new_tokens():
    row = Row(GenerationParams(min_new_tokens=2, ignore_eos=True, stop_token_ids=(5,)))
    assert Sampler([7]).suppressed_ids(row) == [5]


def test_greedy_row_takes_argmax_of_penalised_logits():
    x = torch.zeros(1, VOCAB)
    x[0, 10] = 2.0
    x[0, 11] = 1.5
    row = Row(GenerationParams(repetition_penalty=2.0), prompt_ids=[10])
    assert Sampler([]).sample(x, [row]).token_ids == [11]


def test_presence_and_frequency_penalties_use_generated_counts():
    x = torch.zeros(1, VOCAB)
    x[0, 10] = 2.0
    x[0, 11] = 1.0
    row = Row(GenerationParams(presence_penalty=0.5, frequency_penalty=0.3), prompt_ids=[11], output_ids=[10, 10])
    # 10: 2.0 - 2*0.3 - 0.5 = 0.9 < 1.0 (11 is only in the prompt, so not penalised)
    assert Sampler([]).sample(x, [row]).token_ids == [11]


def _sampled(seed: int, **kw) -> Row:
    return Row(GenerationParams(do_sample=True, seed=seed, **kw), generator=torch.Generator().manual_seed(seed))


def test_seeded_row_draws_the_same_alone_and_among_other_rows():
    x = _logits(8, seed=3)
    alone = Sampler([]).sample(x[2:3].clone(), [_sampled(42, temperature=0.9, top_p=0.9)]).token_ids[0]
    rows = [_sampled(i, top_k=5 + i, temperature=0.5 + i / 10) for i in range(8)]
    rows[2] = _sampled(42, temperature=0.9, top_p=0.9)
    rows[5] = Row(GenerationParams())  # a greedy row in the batch too
    assert Sampler([]).sample(x.clone(), rows).token_ids[2] == alone


def test_sampled_draws_follow_the_distribution():
    x = torch.full((1, VOCAB), float("-inf"))
    x[0, 3], x[0, 4] = 0.0, float(torch.log(torch.tensor(3.0)))  # p(3)=0.25, p(4)=0.75
    row = _sampled(1, top_k=0)
    draws = [Sampler([]).sample(x, [row]).token_ids[0] for _ in range(2000)]
    assert set(draws) == {3, 4}
    assert 0.70 < draws.count(4) / 2000 < 0.80


def test_logprobs_are_raw_log_softmax_with_top_alternatives():
    x = _logits(2)
    rows = [Row(GenerationParams(logprobs=3, repetition_penalty=1.5), prompt_ids=[int(x[0].argmax())]),
            Row(GenerationParams())]
    out = Sampler([]).sample(x.clone(), rows)
    logp = torch.log_softmax(x[0], dim=-1)
    assert out.logprobs[1] is None
    lp = out.logprobs[0]
    assert lp.logprob == pytest.approx(float(logp[out.token_ids[0]]))
    top = torch.topk(logp, 3)
    assert [t for t, _ in lp.top] == top.indices.tolist()
    assert [v for _, v in lp.top] == pytest.approx(top.values.tolist())


def test_logprobs_zero_gives_only_the_chosen_token():
    out = Sampler([]).sample(_logits(1), [Row(GenerationParams(logprobs=0))])
    assert out.logprobs[0].top == []
