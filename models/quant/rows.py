"""Quantizing a weight a slice of rows at a time, for the layers whose rows are quantized independently
(int8.py's per-row codes, qdot.py's blocks of 32 along each row): the temporaries of a whole 49k-row LM head or
embedding table (float32 copies, int32 codes, about 0.2 GB) then never all exist at once at the load's peak, and
the results are the same tensors as from the whole weight."""
from __future__ import annotations

from collections.abc import Callable

import torch

ROWS_AT_A_TIME = 4096  # a multiple of 8, qdot.py's column groups


def by_rows(quantize: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
            weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """quantize(weight) computed ROWS_AT_A_TIME rows at a time, each output joined along its first dimension."""
    if weight.shape[0] <= ROWS_AT_A_TIME:
        return quantize(weight)
    parts = [quantize(weight[i:i + ROWS_AT_A_TIME]) for i in range(0, weight.shape[0], ROWS_AT_A_TIME)]
    return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))
