"""The dtype the CPU weight-only kernels (int8.py, int4.py) are given their activations in: bfloat16, whatever
the network computes in.

torch 2.13's `_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu` are vectorized for bfloat16 activations
only; float32 and float16 take a scalar loop. Measured on a 2-core AMD EPYC with AVX2 (one thread, a 576 x 1536
layer of the default model, CPU time a call): int4 at 1 row 0.19 ms in bfloat16 against 2.0 (float32) and 3.0
(float16); at 64 rows 4.6 against 127 and 210; int8 at 4 rows 0.20 against 5.2 and 6.1. So a float32 network
(the default where the CPU has no native bfloat16) keeps its norms, attention and KV cache in float32 and hands
each quantized projection its rows in bfloat16, taking the result back in float32. Both casts are elementwise,
so a row's result still ignores the other rows (batch invariance, models/invariant_ops.py); the kernel adds
each output up in float32 either way.
"""
from __future__ import annotations

import torch

KERNEL_DTYPE = torch.bfloat16


def to_kernel(x: torch.Tensor) -> torch.Tensor:
    """x in the kernels' dtype, contiguous (as the kernels require)."""
    return x.to(KERNEL_DTYPE).contiguous()
