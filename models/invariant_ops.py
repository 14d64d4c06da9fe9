"""Matrix products at shapes that the make-up of a batch cannot change, so a sequence's logits are the same
bits whatever else shares its step (batch invariance, by construction rather than by tuning to one CPU).

A GEMM kernel chooses its blocking, and so the order in which it adds up a dot product, from the shapes it
is given. Measured with torch 2.13: on an Intel Xeon (AMX), a float32 projection row differs between 8 and
16 rows or more; on an AMD EPYC, float32 rows differ below 8 rows and bfloat16 rows at 1; a float32 P @ V
over 704 keys differs from the same product over 768 keys whose last 64 weights are 0. So no product here
is ever run at a shape set by the batch:

- Projections (`project`) run on row tiles of a fixed height: a step's decode rows in tiles of a decode
  height and its prefill rows in tiles of a prefill height (`TILE_HEIGHTS`, by dtype), the last tile of
  each zero-padded. Every row of every step meets the same kernel at the same shape, whatever its
  neighbours.
- Attention (`attend`) runs a fixed number of query rows per product: a decode step's rows are one query
  per sequence per head of a kv head (fixed by the model), and a prefill chunk's rows go in tiles of
  `PREFILL_QUERY_TILE`. It reduces over the head dimension (fixed by the model) for the scores, softmaxes over
  whole blocks of keys (hidden keys weigh exactly 0), and multiplies the weights by the values per block of
  keys (`DECODE_KEY_BLOCK`, `PREFILL_KEY_BLOCK`; every block's product in one batched call), adding the
  blocks' products in float32 by a fixed pairwise tree (block 2i with block 2i + 1, level by level, over the
  blocks rounded up to a power of two). How many keys a step reads (set by its longest sequence, or by where
  a prompt's chunk ends) then changes only how many zero blocks the tree adds, and adding 0 is exact.

What is assumed of the kernels, and checked where the tests run: a row's result of a projection does not
depend on its place in the tile or on the tile's other rows, and a batched product with a fixed reduction
length (head_dim, one block of keys) gives each element the same bits whatever the batch count, row count
and column count.

The tiles are chosen for speed (see README, "Batch invariance"); any fixed values keep the guarantee.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.batch import SLOT_ALIGN

# Row tile heights (decode, prefill) by compute dtype, chosen by measuring the default model's steps on a
# 2-core Xeon (README, "Batch invariance"). A decode step holds 1 to max_batch rows: a lower tile costs a
# lone sequence less, a taller one costs a full batch fewer passes over the weights. Prefill chunks are long,
# and a taller tile keeps their GEMMs efficient; padding costs at most one tile per step, shared by all the
# step's prompts. In float32 the multiplies themselves are dear, so its prefill tile is lower.
TILE_HEIGHTS = {torch.float32: (32, 64), torch.bfloat16: (32, 256), torch.float16: (32, 256)}

# Keys are read, softmaxed and reduced in whole blocks of this many positions: decode steps read every
# sequence's keys up to the longest one's, rounded up to a block, so their block is small; a prefill chunk
# reads only its own slot's keys, and a larger block means fewer partial products to add.
DECODE_KEY_BLOCK = 64
PREFILL_KEY_BLOCK = 256
# A prefill chunk's query rows (T tokens x the heads of a kv head) are attended in tiles of this many rows.
PREFILL_QUERY_TILE = 192
if SLOT_ALIGN % PREFILL_KEY_BLOCK or SLOT_ALIGN % DECODE_KEY_BLOCK:
    raise ImportError("a slot must hold whole key blocks: SLOT_ALIGN is not a multiple of the key blocks")


def key_span(n: int, block: int) -> int:
    """Keys read for a longest position of n - 1: n rounded up to whole blocks."""
    return -(-n // block) * block


@dataclass(frozen=True)
class RowTiling:
    """How a step's N rows are cut for its projections: rows [0, num_decode) in tiles of `decode_tile`,
    rows [num_decode, N) in tiles of `prefill_tile`."""

    num_rows: int
    num_decode: int
    decode_tile: int
    prefill_tile: int

    @classmethod
    def for_step(cls, num_rows: int, num_decode: int, dtype: torch.dtype) -> RowTiling:
        decode_tile, prefill_tile = TILE_HEIGHTS.get(dtype, TILE_HEIGHTS[torch.float32])
        return cls(num_rows, num_decode, decode_tile, prefill_tile)

    def segments(self) -> list[tuple[int, int, int]]:
        """(start, stop, tile) of each non-empty part."""
        parts = [(0, self.num_decode, self.decode_tile), (self.num_decode, self.num_rows, self.prefill_tile)]
        return [(lo, hi, tile) for lo, hi, tile in parts if hi > lo]

    @classmethod
    def uniform(cls, num_rows: int, dtype: torch.dtype) -> RowTiling:
        """All rows in decode tiles (the LM head: a mix of decode rows and prompts' last rows)."""
        decode_tile = cls.for_step(num_rows, num_rows, dtype).decode_tile
        return cls(num_rows, num_rows, decode_tile, decode_tile)


def project(layer: nn.Module, x: torch.Tensor, tiling: RowTiling) -> torch.Tensor:
    """layer(x) for x (N, in), every row computed in a tile of its part's fixed height; returns (N, out).
    A layer that declares `row_independent = True` runs on the N rows as they are (see below)."""
    n = x.shape[0]
    if n != tiling.num_rows:
        raise ValueError(f"project: {n} rows, but the tiling is for {tiling.num_rows}")
    if getattr(layer, "row_independent", False) is True:
        # a kernel whose row result ignores the row count and the other rows (models/quant/int8.py, int4.py;
        # checked by tests/models/test_quant_kernels.py): any tiling gives the same bits, so none is padded
        out: torch.Tensor = layer(x)
        return out
    out = x.new_empty(n, _out_features(layer))
    for lo, hi, tile in tiling.segments():
        for start in range(lo, hi, tile):
            stop = min(start + tile, hi)
            if stop - start == tile:
                _apply(layer, x[start:stop], out[start:stop])
            else:  # the part's last tile, zero-padded to the full height
                full = x.new_empty(tile, out.shape[1])
                _apply(layer, F.pad(x[start:stop], (0, 0, 0, tile - (stop - start))), full)
                out[start:stop] = full[:stop - start]
    return out


def _apply(layer: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    """out = layer(x) for one whole tile. A plain Linear makes the call F.linear makes (addmm with a bias, mm
    without) writing in place; any other layer (a quantized one, models/quant.py) is called and copied."""
    if type(layer) is not nn.Linear:
        out.copy_(layer(x))
    elif layer.bias is None:
        torch.mm(x, layer.weight.t(), out=out)
    else:
        torch.addmm(layer.bias, x, layer.weight.t(), out=out)


def _out_features(layer: nn.Module) -> int:
    features: object = getattr(layer, "out_features", None)  # a Linear's, or a quantized Linear's
    if not isinstance(features, int):
        raise TypeError(f"project: {type(layer).__name__} has no out_features")
    return features


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
           block: int, row_tile: int | None = None) -> torch.Tensor:
    """Attention of query rows over keys, batched: q (B, M, hd), k and v (B, S, hd) with S a whole number of
    `block`s (views of the cache are fine), bias (B or 1, M, S): 0 = attend, -inf = hidden. Returns (B, M, hd)
    in q's dtype.

    scores = q k^T reduces over hd only; the softmax is over S; P @ V is multiplied block by block and the blocks'
    products summed by a fixed pairwise tree (in float32), so a row's result is the same for any S that covers its
    visible keys. The products' row count is M, or `row_tile` when given: the rows then go through in tiles of that
    height (the last one zero-padded), for callers whose M is set by the batch (a kernel may add up a row
    differently at another row count: measured, a float32 q k^T row at M = 1 or 2 against M = 5).
    """
    s = k.shape[1]
    if s % block:
        raise ValueError(f"attend: {s} keys is not a whole number of {block}-key blocks")
    m = q.shape[1]
    if row_tile is None or m == row_tile:
        return _attend(q, k, v, bias, scale, block)
    pad = (-m) % row_tile
    q = F.pad(q, (0, 0, 0, pad))
    bias = F.pad(bias, (0, 0, 0, pad))  # padded rows see every key: finite, and dropped
    out = torch.cat([_attend(q[:, lo:lo + row_tile], k, v, bias[:, lo:lo + row_tile], scale, block)
                     for lo in range(0, m + pad, row_tile)], dim=1)
    return out[:, :m]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float,
            block: int) -> torch.Tensor:
    s = k.shape[1]
    scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)  # (B, M, S)
    weights = scores.softmax(dim=-1)
    if s == block:
        return torch.bmm(weights, v)
    # every block's P @ V in one batched product, (B * n, M, block) @ (B * n, block, hd): each block's product
    # at the same shape as alone (a fixed reduction length, block); then the blocks' products added in float32
    # by a fixed pairwise tree, as over n rounded up to a power of two with zero blocks after the last. Blocks
    # past a row's keys are zeros too, so a row's sum is the same whatever n: a larger tree only adds zeros.
    b, m, hd, n = q.shape[0], q.shape[1], v.shape[2], s // block
    w = weights.view(b, m, n, block).transpose(1, 2).reshape(b * n, m, block)
    sums = torch.bmm(w, v.reshape(b * n, block, hd)).view(b, n, m, hd).float()
    while n > 1:
        pairs = sums[:, 0:n - 1:2] + sums[:, 1:n:2]  # block 2i + block 2i+1, in float32
        # the odd one out moves up a level as it is: the same as adding the zero block after it
        sums = torch.cat((pairs, sums[:, n - 1:]), dim=1) if n % 2 else pairs
        n = sums.shape[1]
    return sums[:, 0].to(q.dtype)
