"""Weight-only int8 on the CPU through torch's own kernel (`torch._weight_int8pack_mm`, as gpt-fast uses it).

Each output row n of a weight (N, K) is stored as int8 codes q[n] and one scale s[n] = max |w[n]| / 127 in
bfloat16; y = x @ (q * s)^T. A step reads 1 byte a weight instead of 2 (bfloat16) or 4 (float32); the
activations are given to the kernel in bfloat16 whatever the compute dtype (kernel_dtype.py: the kernel's only
vectorized dtype) and its result goes back to the compute dtype; nothing is quantized on the fly, unlike
LLM.int8().

Batch invariance: the kernel computes every output element of a row by one loop over K in the same order
whatever the row count (blocks of 4 rows x 4 columns, each element its own accumulator; torch 2.13's
aten/src/ATen/native/cpu/int8mm_kernel.cpp), so a row's result ignores how many rows run and which: the
layer is `row_independent`, and models/invariant_ops.project runs it on a step's rows as they are, with no
padded tile. tests/models/test_quant_kernels.py checks that assumption where the suite runs.
"""
from __future__ import annotations

import torch
from torch import nn

from models.quant.kernel_dtype import KERNEL_DTYPE, to_kernel
from models.quant.rows import by_rows


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of a float weight (N, K): codes (N, K) int8 and scales (N,) float32, a slice of rows
    at a time (rows.py)."""
    codes, scales = by_rows(_quantize_rows, weight)
    return codes, scales


def _quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    codes = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scales


class Int8Linear(nn.Module):
    """A Linear whose weight is int8 codes with one scale per output row; inputs and outputs in `dtype`."""

    row_independent = True  # see the module docstring
    codes: torch.Tensor  # (N, K) int8
    scales: torch.Tensor  # (N,) in the kernel's dtype (bfloat16)

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scales", scales.to(KERNEL_DTYPE).contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> Int8Linear:
        codes, scales = quantize_rows(weight)
        return cls(codes, scales, bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int8pack_mm(to_kernel(x), self.codes, self.scales).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> torch.Tensor:
        """The weight (N, K) the layer multiplies by, in float32 (for tests and comparisons)."""
        return self.codes.float() * self.scales.float()[:, None]


class Int8Embedding(nn.Module):
    """An embedding table read from int8 rows: row i is codes[i] * scales[i], in `dtype` (the compute dtype). It
    may share its tensors with the tied LM head's Int8Linear, so the table is held once."""

    codes: torch.Tensor  # (vocab, hidden) int8
    scales: torch.Tensor  # (vocab,), the head's (bfloat16)

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codes[ids].to(self.dtype) * self.scales[ids, None].to(self.dtype)
