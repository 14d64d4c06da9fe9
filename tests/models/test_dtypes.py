"""`auto` resolves to what the device computes natively; explicit dtypes pass through."""
from __future__ import annotations

import pytest

from models import dtypes
from models.engine.engine import EngineConfig, EngineConfigError


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_an_explicit_dtype_is_kept_on_any_device(name: str) -> None:
    assert dtypes.resolve_dtype(name, "cpu") == name
    assert dtypes.resolve_dtype(name, "cuda") == name


@pytest.mark.parametrize("native,expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_on_cpu_follows_the_cpus_bf16_instructions(monkeypatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(dtypes, "cpu_has_native_bf16", lambda: native)
    assert dtypes.resolve_dtype("auto", "cpu") == expected
    assert EngineConfig(dtype="auto").dtype == expected


def test_this_cpus_flags_decide_auto() -> None:
    flags = open("/proc/cpuinfo").read()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert dtypes.cpu_has_native_bf16() is native


def test_an_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError):
        dtypes.resolve_dtype("int4")
    with pytest.raises(EngineConfigError):
        EngineConfig(dtype="float64")
