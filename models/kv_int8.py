"""The KV cache in 8 bits: each (position, kv head) row of head_dim keys or values stored as head_dim int8 codes
followed by its float32 scale (4 bytes), one row of head_dim + 4 bytes where bfloat16 takes 2 x head_dim.

    scale = max |x| / 127;  code = round(x / scale)  (half to even; all zeros when scale is 0);  x' = code * scale

A row's codes depend on that row's values only, so quantizing keeps batch invariance: a sequence's keys are the
same bytes whatever its neighbours. The C writer and reader (models/quant/native/layer_ops.c, kv_* helpers) use
the same float32 operations in the same order as these torch functions, so either path writes the same bytes
(tests/models/test_kv_int8.py). The error is at most half a code step of the row's largest value, about 0.4% of
it: the README's KV cache section gives the measured agreement with a bfloat16 cache.
"""
from __future__ import annotations

import torch

SCALE_BYTES = 4  # the float32 scale after a row's codes
CODE_MAX = 127.0


def row_bytes(head_dim: int) -> int:
    """Bytes of one quantized row: its codes and its scale."""
    return head_dim + SCALE_BYTES


def head_dim_of(row_width: int) -> int:
    """The head_dim whose quantized rows are `row_width` bytes."""
    return row_width - SCALE_BYTES


def quantize_rows(x: torch.Tensor) -> torch.Tensor:
    """x (..., head_dim), any float dtype -> int8 (..., head_dim + 4): each row's codes, then its scale's bytes."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True) / CODE_MAX
    codes = torch.round(x / torch.where(scale > 0, scale, torch.ones_like(scale))).to(torch.int8)
    return torch.cat([codes, scale.contiguous().view(torch.int8)], dim=-1)


def dequantize_rows(rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int8 (..., head_dim + 4) rows -> (..., head_dim) values code * scale, computed in float32, in `dtype`."""
    hd = head_dim_of(rows.shape[-1])
    scale = rows[..., hd:].contiguous().view(torch.float32)  # (..., 1)
    return (rows[..., :hd].float() * scale).to(dtype)
