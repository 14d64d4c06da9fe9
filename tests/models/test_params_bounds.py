"""models.params: every numeric generation parameter has a bound the model makes sense of, checked on
construction (the model-independent ones) and against a model's limits (the ones that depend on it)."""
from __future__ import annotations

import pytest

from models.echo import clip, short
from models.params import (
    BOUNDS,
    MAX_STOP_STRING_CHARS,
    MAX_STOP_STRINGS,
    MAX_STOP_TOKEN_IDS,
    ContextOverflow,
    GenerationParams,
    ModelLimits,
    ParamError,
    check_fits,
    check_for_model,
)

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("name", [n for n, b in BOUNDS.items() if b.kind == "int"])
def test_every_integer_parameter_has_an_upper_bound_inside_int64(name: str) -> None:
    assert BOUNDS[name].hi is not None and BOUNDS[name].hi <= INT64_MAX
    with pytest.raises(ParamError) as caught:
        GenerationParams.resolve({name: 2**63})  # the reported top_k: past int64, it broke the sampler
    assert caught.value.field == f"params.{name}"


@pytest.mark.parametrize("name", [n for n, b in BOUNDS.items() if b.kind == "float"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e308])
def test_every_float_parameter_refuses_non_finite_and_huge_values(name: str, value: float) -> None:
    with pytest.raises(ParamError) as caught:
        GenerationParams.resolve({name: value})
    assert caught.value.field == f"params.{name}"


@pytest.mark.parametrize("params,field", [
    ({"stop": ["x"] * (MAX_STOP_STRINGS + 1)}, "params.stop"),
    ({"stop": ["x" * (MAX_STOP_STRING_CHARS + 1)]}, "params.stop"),
    ({"stop_token_ids": [1] * (MAX_STOP_TOKEN_IDS + 1)}, "params.stop_token_ids"),
    ({"stop_token_ids": [2**63]}, "params.stop_token_ids"),
    ({"stop_token_ids": [True]}, "params.stop_token_ids"),
    ({"seed": 2**63}, "params.seed"),
])
def test_list_parameters_are_bounded_in_length_and_value(params: dict, field: str) -> None:
    with pytest.raises(ParamError) as caught:
        GenerationParams.resolve(params)
    assert caught.value.field == field


def test_a_record_changed_after_construction_is_refused_by_validate() -> None:
    params = GenerationParams()
    object.__setattr__(params, "top_k", 2**63)
    with pytest.raises(ParamError, match="top_k"):
        params.validate()


LIMITS = ModelLimits(vocab_size=1000, context_length=512)


@pytest.mark.parametrize("params,field", [
    ({"do_sample": True, "top_k": 1001}, "params.top_k"),
    ({"stop_token_ids": [1000]}, "params.stop_token_ids"),
    ({"no_repeat_ngram_size": 513}, "params.no_repeat_ngram_size"),
    ({"max_new_tokens": 512}, "params.max_new_tokens"),  # a prompt has at least one token
])
def test_bounds_that_depend_on_the_model_are_checked_against_its_limits(params: dict, field: str) -> None:
    resolved = GenerationParams.resolve(params)
    with pytest.raises(ParamError) as caught:
        check_for_model(resolved, LIMITS)
    assert caught.value.field == field


def test_values_at_the_model_s_limits_are_accepted() -> None:
    check_for_model(GenerationParams.resolve({"do_sample": True, "top_k": 1000, "stop_token_ids": [999],
                                              "no_repeat_ngram_size": 512, "max_new_tokens": 511}), LIMITS)
    check_for_model(GenerationParams(top_k=50), ModelLimits(vocab_size=20, context_length=512))  # greedy: unused


def test_a_prompt_that_cannot_fit_names_the_prompt_else_max_new_tokens() -> None:
    check_fits(500, 12, 512)
    with pytest.raises(ContextOverflow) as caught:
        check_fits(500, 13, 512)
    assert caught.value.field == "params.max_new_tokens" and "<= 12" in caught.value.message
    with pytest.raises(ContextOverflow) as caught:
        check_fits(512, 1, 512, prompt_field="messages")
    assert caught.value.field == "messages"


def test_an_unknown_parameter_with_a_huge_name_is_named_short() -> None:
    with pytest.raises(ParamError) as caught:
        GenerationParams.resolve({"x" * 100_000: 1})
    assert caught.value.field.startswith("params.'xxx") and len(caught.value.field) < 120


def test_echoed_numbers_and_strings_are_short() -> None:
    assert short(12345) == "12345"
    assert short(10**4000) == "1" + "0" * 19 + "… (4001 digits)"
    assert short(-(10**30)).startswith("-1000")
    assert short("x" * 1000) == repr("x" * 64) + "… (1000 characters)"
    assert clip("max_new_tokens " + "9" * 4000 + " is too many") == "max_new_tokens " + "9" * 20 + "… is too many"
    assert len(clip("y" * 10_000)) <= 501
