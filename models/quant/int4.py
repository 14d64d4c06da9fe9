"""Weight-only 4-bit on the CPU through torch's own kernel (`aten._weight_int4pack_mm_for_cpu`, with the
weight packed by `aten._convert_weight_to_int4pack_for_cpu`, as gpt-fast does).

Each group of GROUP_SIZE consecutive weights of an output row holds 4-bit codes q in 0..15 and a scale and a
zero point in bfloat16 (the kernel's dtype, kernel_dtype.py; activations are given to it in bfloat16 too and
its result goes back to the compute dtype): w = (q - 8) * scale + zero, with min/max asymmetric rounding (scale =
(max - min) / 15, zero = min + 8 * scale). GROUP_SIZE 32 is llama.cpp's Q4_0/Q4_1 block, so re-quantizing a
Q4_1 GGUF's dequantized weights in float32 gives back its own codes. A step reads half a byte a weight plus
two bfloat16 scales per group (0.625 bytes a weight).

Batch invariance: the kernel computes every output element by one loop over K in the same order whatever the
row count (blocks of up to 4 rows x 64 columns, each element its own float32 accumulator; torch 2.13's
aten/src/ATen/native/cpu/int4mm_kernel.cpp), so the layer is `row_independent` (models/invariant_ops.project
runs it with no padded tile); tests/models/test_quant_kernels.py checks that where the suite runs.
"""
from __future__ import annotations

import torch
from torch import nn

from models.quant.errors import QuantizationError
from models.quant.kernel_dtype import KERNEL_DTYPE, to_kernel

GROUP_SIZE = 32
# the packing kernel's layout: rows in blocks of 64 (AVX512) or 32 (AVX2); any multiple of 16 packs
ROW_MULTIPLE = 16


def quantize_groups(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor,
                                                                                torch.Tensor]:
    """Asymmetric 4-bit of a float weight (N, K) in groups of `group_size` along K: codes (N, K) int32 in
    0..15, scales and zeros (N, K // group_size) float32, such that w ~ (codes - 8) * scale + zero."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    scales = ((hi - lo) / 15.0).clamp(min=1e-12)
    codes = torch.round((w - lo) / scales).clamp_(0, 15).to(torch.int32).reshape(n, k)
    zeros = lo + 8.0 * scales
    return codes, scales.squeeze(-1), zeros.squeeze(-1)


class Int4Linear(nn.Module):
    """A Linear whose weight is packed 4-bit codes with a scale and zero point per group; inputs and outputs
    in `dtype`."""

    row_independent = True  # see the module docstring
    packed: torch.Tensor  # the kernel's layout of the (N, K) codes, uint8
    scales_and_zeros: torch.Tensor  # (K // group_size, N, 2) in the kernel's dtype (bfloat16)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 group_size: int = GROUP_SIZE):
        super().__init__()
        n, k = weight.shape
        if k % group_size or n % ROW_MULTIPLE:
            raise QuantizationError(f"int4 needs in_features divisible by {group_size} and out_features by "
                                    f"{ROW_MULTIPLE}, not (in {k}, out {n})")
        self.out_features, self.in_features, self.group_size = n, k, group_size
        codes, scales, zeros = quantize_groups(weight, group_size)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 1)
        # the kernel reads scales and zeros as (K // group, N, 2)
        scales_and_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(KERNEL_DTYPE))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(to_kernel(x), self.packed, self.group_size,
                                                       self.scales_and_zeros).to(x.dtype)
        return y if self.bias is None else y + self.bias
