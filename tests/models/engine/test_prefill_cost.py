"""The prefill cost model (models/engine/prefill_cost.py): the span from a model's shape, chunk costs, and the
longest chunk within a budget."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from models.engine.prefill_cost import attention_span, chunk_cost, chunk_length, parse_span


def test_the_span_of_smollm2_135m_is_where_attention_flops_equal_the_projections() -> None:
    smollm2 = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_heads=9, num_kv_heads=3, head_dim=64)
    # per layer: q and o 576x576, k and v 576x192, the MLP 3 x 576x1536: 3,538,944 weights, 2 FLOPs each a
    # token; attention 4 x 576 FLOPs an earlier position
    assert attention_span(smollm2) == 3_538_944 * 2 // (4 * 576) == 3072


@pytest.mark.parametrize("start", [0, 100, 3000, 7000])
@pytest.mark.parametrize("budget", [1.5, 50, 554.7])
def test_the_chunk_is_the_longest_within_the_budget(start: int, budget: float) -> None:
    n = chunk_length(start, 10_000, budget, 3072)
    assert n >= 1
    assert n == 1 or chunk_cost(start, n, 3072) <= budget
    assert chunk_cost(start, n + 1, 3072) > budget


def test_without_a_span_a_token_is_a_token() -> None:
    assert chunk_length(5000, 10_000, 512, 0) == 512 and chunk_cost(5000, 512, 0) == 512
    assert chunk_length(0, 7, 512, 3072) == 7  # never past the prompt


def test_a_long_prompt_of_the_default_model_takes_shorter_chunks_later() -> None:
    budget = chunk_cost(0, 512, 3072)
    assert chunk_length(0, 10_000, budget, 3072) == 512
    assert 150 < chunk_length(6000, 10_000, budget, 3072) < 200


def test_a_network_of_another_shape_has_no_span() -> None:
    assert attention_span(SimpleNamespace(num_layers=1, head_dim=16)) == 0


def test_a_command_lines_span_is_auto_or_a_count_of_positions() -> None:
    assert parse_span("auto") is None and parse_span("0") == 0 and parse_span("3072") == 3072
    for bad in ("", "-1", "1.5", "Auto", "many"):
        with pytest.raises(ValueError, match="count of positions or auto"):
            parse_span(bad)
