"""Choose each row's next token from one step's logits, every row under its own parameters.

Order (transformers' `generate`): repetition penalty, presence/frequency penalties, no-repeat n-grams,
stop-token suppression before `min_new_tokens`; then, for sampled rows only, temperature, top-k, top-p,
min-p. Greedy rows take the argmax of the penalised logits (the warpers cannot change it). Sampled rows
draw with their request's own `torch.Generator`, one row at a time, so a seeded request gets the same
draws whatever else is in the batch.

Logprobs are those of the RAW distribution: log-softmax of the network's logits before any penalty,
temperature or truncation (vLLM's default "raw_logprobs"; OpenAI reports the model's probabilities, not
the sampler's). So a token's reported logprob does not depend on the sampling parameters, and a token the
sampler could not have drawn still has a finite logprob.

Masked logits are -inf, as transformers' `filter_value`; the row-vectorised warpers below give the same
masked sets and values as its Temperature/TopK/TopP/MinP warpers applied row by row.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from models.params import GenerationParams

NEG_INF = float("-inf")


class SamplingRow(Protocol):
    """What the sampler needs to know about one row's sequence."""

    params: GenerationParams
    prompt_ids: list[int]
    output_ids: list[int]
    generator: torch.Generator | None


@dataclass
class TokenLogprob:
    """The chosen token's raw logprob and the `top` most likely alternatives as (token_id, logprob)."""

    logprob: float
    top: list[tuple[int, float]]


@dataclass
class SampleOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprob | None]  # one per row; None where the row did not ask for logprobs


# ---- row-vectorised warpers: x is (R, V); every parameter tensor is (R,) ----


def apply_temperature(x: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide each row by its temperature (transformers' TemperatureLogitsWarper)."""
    return x / temperature.to(x.dtype)[:, None]


def apply_top_k(x: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's top_k largest logits, ties with the k-th included; top_k <= 0 leaves a row alone."""
    vocab = x.shape[-1]
    k = top_k.clamp(max=vocab)
    k_max = int(k.max())
    if k_max <= 0:
        return x
    top = torch.topk(x, k_max, dim=-1).values  # (R, k_max), descending
    kth = top.gather(1, (k.clamp(min=1) - 1)[:, None])  # (R, 1): each row's k-th largest
    kth = kth.masked_fill((k <= 0)[:, None], NEG_INF)
    return x.masked_fill(x < kth, NEG_INF)


def apply_top_p(x: torch.Tensor, top_p: Sequence[float]) -> torch.Tensor:
    """Nucleus filtering as transformers' TopPLogitsWarper; rows with top_p >= 1 are left alone.

    The threshold 1 - p is computed in double precision and then rounded, as transformers does with a
    Python float, so the masked sets agree exactly.
    """
    threshold = torch.tensor([1.0 - p if p < 1.0 else -1.0 for p in top_p], dtype=x.dtype, device=x.device)
    sorted_logits, sorted_idx = torch.sort(x, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= threshold[:, None]
    remove[:, -1] = False  # keep at least the most likely token
    remove = remove.scatter(1, sorted_idx, remove)
    return x.masked_fill(remove, NEG_INF)


def apply_min_p(x: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens less likely than min_p times the most likely one (transformers' MinPLogitsWarper)."""
    probs = torch.softmax(x, dim=-1)
    scaled = min_p.to(x.dtype)[:, None] * probs.amax(dim=-1, keepdim=True)
    return x.masked_fill(probs < scaled, NEG_INF)


# ---- one row at a time: these depend on the row's token history ----


def apply_repetition_penalty(row: torch.Tensor, token_ids: Sequence[int], penalty: float) -> None:
    """In place on a (V,) row: divide positive and multiply negative logits of every token seen so far."""
    if not token_ids:
        return
    ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long, device=row.device)
    score = row[ids]
    row[ids] = torch.where(score < 0, score * penalty, score / penalty)


def apply_presence_frequency(row: torch.Tensor, output_ids: Sequence[int], presence: float,
                             frequency: float) -> None:
    """In place on a (V,) row, OpenAI's penalties over generated tokens: -= count*frequency + (count>0)*presence."""
    if not output_ids:
        return
    counts: dict[int, int] = {}
    for t in output_ids:
        counts[t] = counts.get(t, 0) + 1
    ids = torch.tensor(list(counts), dtype=torch.long, device=row.device)
    c = torch.tensor(list(counts.values()), dtype=row.dtype, device=row.device)
    row[ids] -= c * frequency + presence


def banned_ngram_tokens(token_ids: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in token_ids (transformers' NoRepeatNGram)."""
    length = len(token_ids)
    if n <= 0 or length < n:
        return []
    prefix = list(token_ids[length - n + 1:])  # the n-1 last tokens: what a new n-gram would start with
    return [token_ids[i + n - 1] for i in range(length - n + 1) if list(token_ids[i:i + n - 1]) == prefix]


class Sampler:
    """Turns one step's logits into one token per row; stateless apart from the model's EOS ids."""

    def __init__(self, eos_token_ids: Sequence[int]):
        self.eos_token_ids = tuple(eos_token_ids)

    def suppressed_ids(self, row: SamplingRow) -> list[int]:
        """Tokens that may not be drawn yet: the ones that would stop the row before min_new_tokens."""
        p = row.params
        if len(row.output_ids) >= p.min_new_tokens:
            return []
        ids = list(p.stop_token_ids)
        if not p.ignore_eos:
            ids += self.eos_token_ids
        return ids

    @torch.inference_mode()
    def sample(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> SampleOutput:
        """logits: (R, V), row i for rows[i]. Returns the chosen token ids and, where asked, logprobs."""
        raw = logits.float()
        n_rows = raw.shape[0]
        x = raw
        if any(_needs_history(r, self) for r in rows):
            x = raw.clone()
            for i, r in enumerate(rows):
                self._process_history(x[i], r)
        chosen = torch.empty(n_rows, dtype=torch.long, device=raw.device)

        greedy = [i for i, r in enumerate(rows) if not r.params.do_sample]
        if greedy:
            idx = torch.tensor(greedy, dtype=torch.long, device=raw.device)
            chosen[idx] = (x if len(greedy) == n_rows else x[idx]).argmax(dim=-1)
        sampled = [i for i, r in enumerate(rows) if r.params.do_sample]
        if sampled:
            sub = self._warp(x[torch.tensor(sampled, dtype=torch.long, device=raw.device)],
                             [rows[i].params for i in sampled])
            probs = torch.softmax(sub, dim=-1)  # (S, V)
            for j, i in enumerate(sampled):
                p = probs[j]
                if not bool(torch.isfinite(p).all()):
                    # every token masked (a tiny vocabulary under many bans): fall back to the raw argmax
                    chosen[i] = raw[i].argmax()
                    continue
                chosen[i] = torch.multinomial(p, 1, generator=rows[i].generator)[0]

        token_ids = chosen.tolist()
        return SampleOutput(token_ids, self._logprobs(raw, rows, token_ids))

    def _process_history(self, row: torch.Tensor, r: SamplingRow) -> None:
        p = r.params
        if p.repetition_penalty != 1.0:
            apply_repetition_penalty(row, [*r.prompt_ids, *r.output_ids], p.repetition_penalty)
        if p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
            apply_presence_frequency(row, r.output_ids, p.presence_penalty, p.frequency_penalty)
        if p.no_repeat_ngram_size > 0:
            banned = banned_ngram_tokens([*r.prompt_ids, *r.output_ids], p.no_repeat_ngram_size)
            if banned:
                row[torch.tensor(banned, dtype=torch.long, device=row.device)] = NEG_INF
        suppressed = [t for t in self.suppressed_ids(r) if t < row.shape[0]]
        if suppressed:
            row[torch.tensor(suppressed, dtype=torch.long, device=row.device)] = NEG_INF

    @staticmethod
    def _warp(x: torch.Tensor, params: list[GenerationParams]) -> torch.Tensor:
        """Temperature, top-k, top-p, min-p on the sampled rows x: (S, V); each step only where some row uses it."""
        dev = x.device
        if any(p.temperature != 1.0 for p in params):
            x = apply_temperature(x, torch.tensor([p.temperature for p in params], dtype=x.dtype, device=dev))
        if any(p.top_k > 0 for p in params):
            x = apply_top_k(x, torch.tensor([p.top_k for p in params], dtype=torch.long, device=dev))
        if any(p.top_p < 1.0 for p in params):
            x = apply_top_p(x, [p.top_p for p in params])
        if any(p.min_p > 0.0 for p in params):
            x = apply_min_p(x, torch.tensor([p.min_p for p in params], dtype=x.dtype, device=dev))
        return x

    @staticmethod
    def _logprobs(raw: torch.Tensor, rows: Sequence[SamplingRow], token_ids: list[int]) -> list[TokenLogprob | None]:
        wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        out: list[TokenLogprob | None] = [None] * len(rows)
        if not wanted:
            return out
        idx = torch.tensor(wanted, dtype=torch.long, device=raw.device)
        logp = torch.log_softmax(raw[idx], dim=-1)  # (W, V)
        chosen = logp.gather(1, torch.tensor([token_ids[i] for i in wanted], device=raw.device)[:, None])[:, 0]
        n_top = max(rows[i].params.logprobs or 0 for i in wanted)
        top_v, top_i = (logp.topk(n_top, dim=-1) if n_top > 0 else (logp[:, :0], logp[:, :0].long()))
        chosen_l, top_vl, top_il = chosen.tolist(), top_v.tolist(), top_i.tolist()
        for j, i in enumerate(wanted):
            n = rows[i].params.logprobs or 0
            out[i] = TokenLogprob(chosen_l[j], list(zip(top_il[j][:n], top_vl[j][:n], strict=True)))
        return out


def _needs_history(r: SamplingRow, sampler: Sampler) -> bool:
    p = r.params
    return (p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
            or p.no_repeat_ngram_size > 0 or (len(r.output_ids) < p.min_new_tokens))
