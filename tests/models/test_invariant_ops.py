"""The products of models/invariant_ops.py give a row the same bits whatever shares its step, on the machine
running the tests; and the two things they assume of the machine's kernels hold here. If a new CPU, BLAS or
torch breaks an assumption, the assumption's test names it (the network's own bitwise tests would only say
that something broke)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.invariant_ops import (
    DECODE_KEY_BLOCK,
    PREFILL_KEY_BLOCK,
    PREFILL_QUERY_TILE,
    TILE_HEIGHTS,
    RowTiling,
    attend,
    project,
)

DTYPES = [torch.float32, torch.bfloat16]
# (in, out) of the default model's projections: qkv, o, gate_up, down
SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576)]


@pytest.fixture(autouse=True)
def _inference():
    """The network runs these under inference mode, as the tests do."""
    with torch.inference_mode():
        yield


def linear(n_in: int, n_out: int, dtype: torch.dtype, bias: bool = False) -> nn.Linear:
    torch.manual_seed(n_in * 7 + n_out)
    return nn.Linear(n_in, n_out, bias=bias).to(dtype)


def rows(n: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_decode_row_is_the_same_bits_beside_any_number_of_others(dtype, shape):
    layer = linear(*shape, dtype)
    mine = rows(1, shape[0], dtype, seed=0)
    alone = project(layer, mine, RowTiling.for_step(1, 1, dtype))[0]
    for n, place in [(2, 1), (7, 3), (16, 15), (33, 0), (33, 32), (64, 40), (100, 99)]:
        batch = rows(n, shape[0], dtype, seed=n)
        batch[place] = mine[0]
        got = project(layer, batch, RowTiling.for_step(n, n, dtype))[place]
        assert torch.equal(got, alone), (n, place)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_a_prefill_row_is_the_same_bits_whatever_chunk_or_decode_rows_surround_it(dtype, bias):
    layer = linear(576, 960, dtype, bias=bias)
    prompt = rows(300, 576, dtype, seed=1)
    whole = project(layer, prompt, RowTiling.for_step(300, 0, dtype))
    # the same rows as chunks of other lengths, behind 0, 5 or 40 decode rows
    for decode, start, length in [(0, 0, 1), (5, 0, 130), (40, 130, 170), (5, 299, 1), (0, 17, 200)]:
        step = torch.cat([rows(decode, 576, dtype, seed=2), prompt[start:start + length]])
        got = project(layer, step, RowTiling.for_step(decode + length, decode, dtype))[decode:]
        assert torch.equal(got, whole[start:start + length]), (decode, start, length)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_quantized_or_other_layer_is_called_on_whole_tiles_only(dtype):
    seen: list[int] = []

    class Probe(nn.Module):
        out_features = 4

        def forward(self, x):
            seen.append(x.shape[0])
            return x[:, :4]

    decode_tile, prefill_tile = TILE_HEIGHTS[dtype]
    x = rows(3 + 70, 8, dtype, seed=3)
    out = project(Probe(), x, RowTiling.for_step(73, 3, dtype))
    assert torch.equal(out, x[:, :4])
    assert set(seen) <= {decode_tile, prefill_tile} and len(seen) >= 2


def _keys_values_queries(dtype: torch.dtype, m: int):
    g = torch.Generator().manual_seed(4)
    k = torch.randn(6, 8 * PREFILL_KEY_BLOCK, 64, generator=g).to(dtype)
    v = torch.randn(6, 8 * PREFILL_KEY_BLOCK, 64, generator=g).to(dtype)
    return k, v, torch.randn(6, m, 64, generator=g).to(dtype)


def _attend_first_visible(q, k, v, visible: int, keys: int, block: int, row_tile: int | None):
    b, m = q.shape[:2]
    bias = torch.zeros(b, m, keys, dtype=q.dtype)
    bias[:, :, visible:] = float("-inf")
    return attend(q, k[:b, :keys], v[:b, :keys], bias, 64 ** -0.5, block, row_tile)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_attention_of_a_row_is_the_same_bits_whatever_the_batch_and_the_keys_read(dtype):
    k, v, q = _keys_values_queries(dtype, 3)  # decode: one query per head of a kv head, 3 for the default model
    visible = 700
    reference = _attend_first_visible(q, k, v, visible, 704, DECODE_KEY_BLOCK, None)
    for keys in (768, 1024, 2048):
        for batch in (6, 1, 4):
            got = _attend_first_visible(q[:batch], k, v, visible, keys, DECODE_KEY_BLOCK, None)
            assert torch.equal(got, reference[:batch]), (keys, batch)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_prefill_attention_of_a_row_is_the_same_bits_whatever_the_chunk_and_the_keys_read(dtype):
    k, v, q = _keys_values_queries(dtype, 200)
    visible = 700
    reference = _attend_first_visible(q[:3, :1], k, v, visible, 768, PREFILL_KEY_BLOCK, PREFILL_QUERY_TILE)
    for m in (1, 2, 5, 64, 65, 200):
        for keys in (768, 1024, 2048):
            got = _attend_first_visible(q[:3, :m], k, v, visible, keys, PREFILL_KEY_BLOCK, PREFILL_QUERY_TILE)
            assert torch.equal(got[:, :1], reference), (m, keys)


def test_attention_refuses_keys_that_are_not_whole_blocks():
    q, k = torch.zeros(1, 1, 8), torch.zeros(1, 65, 8)
    with pytest.raises(ValueError, match="whole number"):
        attend(q, k, k, torch.zeros(1, 1, 65), 1.0, 64)


# --- what the construction assumes of the machine's kernels -------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_assumption_a_row_of_a_fixed_height_gemm_ignores_its_place_and_neighbours(dtype):
    for height in sorted({h for pair in TILE_HEIGHTS.values() for h in pair}):
        w = rows(3072, 576, dtype, seed=5)
        mine = rows(1, 576, dtype, seed=6)[0]
        results = []
        for place, seed in [(0, 7), (height // 2, 8), (height - 1, 9), (0, 10)]:
            tile = rows(height, 576, dtype, seed=seed)
            tile[place] = mine
            if seed == 10:
                tile[1:] = 0  # zero padding, as the last tile of a part has
            results.append(torch.mm(tile, w.t())[place])
        assert all(torch.equal(r, results[0]) for r in results), height


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_assumption_a_batched_product_over_a_fixed_reduction_ignores_the_batch_and_the_columns(dtype):
    g = torch.Generator().manual_seed(11)
    a = torch.randn(200, 64, 64, generator=g).to(dtype)
    b = torch.randn(200, 64, 2048, generator=g).to(dtype)
    for m in (1, 3, PREFILL_QUERY_TILE):  # row counts the network uses: 1 or 3 decode heads, a prefill tile
        reference = torch.bmm(a[:1, :m], b[:1, :, :64])[0]
        for batch, n in [(1, 64), (200, 64), (192, 1024), (3, 512), (7, 2048)]:
            got = torch.bmm(a[:batch, :m], b[:batch, :, :n])[0, :, :64]
            assert torch.equal(got, reference), (m, batch, n)
