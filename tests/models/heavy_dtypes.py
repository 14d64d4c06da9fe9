"""The dtypes of the heavy real-model cases (whole generations, bitwise networks): float32, and bfloat16 where this
CPU computes it natively. Where bfloat16 is emulated (no avx512_bf16 / amx_bf16, e.g. an AVX2-only EPYC) each of
those cases takes minutes, so they skip there, saying why; the kernel-assumption tests (test_invariant_ops.py)
and the cheaper bfloat16 tests still run on every CPU."""
from __future__ import annotations

import pytest

from models.dtypes import cpu_has_native_bf16

HEAVY_DTYPES = ["float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
    not cpu_has_native_bf16(),
    reason="bfloat16 is emulated on this CPU: the heavy real-model bfloat16 cases run where it is native"))]
