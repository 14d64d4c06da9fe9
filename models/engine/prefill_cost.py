"""What a prompt chunk costs, so that a step's prefill budget buys fewer tokens the later in a context they are.

A prompt token costs its projections (the same at every position) plus its attention over the positions
before it (growing with the position). Counted in FLOPs per layer: 2 x the layer's weights for the
projections, 4 x (heads x head_dim) per earlier position for the attention (q.k, then p.v). The two are
equal at `attention_span(config)` positions (3,072 for SmolLM2-135M), and a chunk of n tokens starting at
position s costs n x (1 + (s + n/2) / span) tokens of a context's start. The scheduler's budget per step is
what a chunk of `prefill_chunk` tokens at position 0 costs, so a short prompt's chunks are as before, and a
long prompt's later chunks are shorter (about 170 tokens at position 6,000 for the default model instead of
512): the requests decoding beside it wait less for each of their tokens, and the prompt takes more steps.
Off by default (EngineConfig.prefill_span 0): measured on a 7,065-token prompt beside 4 decoding requests, the
longest wait for a token fell from 2.6-2.9 s to 1.3-1.6 s, but the prompt's first token came 20-35% later,
since a step's time falls less than its FLOPs do (reading the whole context costs every step). Plain
Python, no torch.
"""
from __future__ import annotations

import math
from typing import Any


def attention_span(config: Any) -> int:
    """Positions at which a token's attention costs as many FLOPs as its projections (a Llama-family
    ModelConfig: hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim); 0 for a network of
    another shape (every prompt token then costs the same)."""
    shape = ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "head_dim")
    if not all(isinstance(getattr(config, name, None), int) for name in shape):
        return 0
    hidden, q = config.hidden_size, config.num_heads * config.head_dim
    kv = config.num_kv_heads * config.head_dim
    weights = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * config.intermediate_size
    return max(1, weights // (2 * q))


def parse_span(text: str) -> int | None:
    """A command line's prefill span (`--prefill-span`): "auto" is None (EngineConfig: from the model's shape),
    else a count of positions >= 0 (0: every prompt token costs the same)."""
    if text == "auto":
        return None
    if not text.isdigit():
        raise ValueError(f"a prefill span is a count of positions or auto, not {text!r}")
    return int(text)


def chunk_cost(start: int, length: int, span: int) -> float:
    """The cost of prompt tokens start..start+length-1, in tokens at a context's start (span 0: tokens)."""
    if span <= 0:
        return float(length)
    return length * (1 + (start + length / 2) / span)


def chunk_length(start: int, remaining: int, budget: float, span: int) -> int:
    """The most prompt tokens from `start` (at most `remaining`, at least 1) whose cost stays within `budget`."""
    if span <= 0:
        return max(1, min(remaining, int(budget)))
    # length^2 / (2 span) + length (1 + start / span) <= budget
    a, b = 1 / (2 * span), 1 + start / span
    length = int((-b + math.sqrt(b * b + 4 * a * budget)) / (2 * a) + 1e-9)
    while length > 1 and chunk_cost(start, length, span) > budget + 1e-9:
        length -= 1
    return max(1, min(remaining, length))
