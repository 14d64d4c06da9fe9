"""The weight-only int8 and int4 layers (models/quant/) on the machine running the tests: what batch invariance
assumes of their kernels holds here (a row's result ignores how many rows run and which, so
models/invariant_ops.project runs them with no padded tile), their weights take the bytes they promise, and
they compute close to the float layer they replace. If a new CPU or torch breaks the assumption, the first
test names the kernel, the dtype and the row count."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.invariant_ops import RowTiling, project
from models.quant import weight_bytes
from models.quant.int4 import GROUP_SIZE, Int4Linear, quantize_groups
from models.quant.int8 import Int8Embedding, Int8Linear, quantize_rows

DTYPES = [torch.float32, torch.bfloat16]
# (in, out) of the default model's projections: qkv, o, gate_up, down; and the LM head
SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576)]
# decode steps hold 1 to 64 rows, prefill steps up to the step's token budget (512)
ROW_COUNTS = [*range(1, 18), 31, 32, 33, 63, 64, 65, 100, 128, 255, 256, 257, 512]
KERNELS = {"int8": lambda w, b, dt: Int8Linear.from_float(w, b, dt), "int4": lambda w, b, dt: Int4Linear(w, b, dt)}


@pytest.fixture(autouse=True)
def _inference():
    with torch.inference_mode():
        yield


def weight(n_in: int, n_out: int) -> torch.Tensor:
    return torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(n_in * 7 + n_out)) * n_in ** -0.5


def rows(n: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_row_is_the_same_bits_whatever_the_row_count_and_the_other_rows(kernel, dtype, shape):
    layer = KERNELS[kernel](weight(*shape), None, dtype)
    batch = rows(max(ROW_COUNTS) + 3, shape[0], dtype, seed=1)
    alone = torch.cat([layer(batch[i:i + 1]) for i in range(batch.shape[0])])
    other = rows(max(ROW_COUNTS) + 3, shape[0], dtype, seed=2)
    for m in ROW_COUNTS:
        for start in (0, 3):
            got = layer(batch[start:start + m])
            assert torch.equal(got, alone[start:start + m]), f"{kernel} {dtype}: a row differs among {m} rows"
        # the same row among other neighbours
        mixed = other[:m].clone()
        mixed[m // 2] = batch[0]
        assert torch.equal(layer(mixed)[m // 2], alone[0]), f"{kernel} {dtype}: a row moved with its neighbours"


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_project_runs_a_row_independent_layer_once_on_the_rows_as_they_are(kernel, dtype):
    layer = KERNELS[kernel](weight(576, 960), torch.randn(960), dtype)
    calls: list[int] = []
    layer.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))
    x = rows(3 + 70, 576, dtype, seed=3)
    out = project(layer, x, RowTiling.for_step(73, 3, dtype))
    assert calls == [73] and out.shape == (73, 960)
    assert torch.equal(out[5], layer(x[5:6])[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_int8_is_one_byte_a_weight_and_one_bfloat16_scale_a_row(dtype):
    layer = Int8Linear.from_float(weight(576, 960), None, dtype)
    assert weight_bytes(layer) == 960 * 576 + 960 * 2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_int4_is_half_a_byte_a_weight_and_two_bfloat16_scales_a_group(dtype):
    layer = Int4Linear(weight(576, 960), None, dtype)
    assert weight_bytes(layer) == 960 * 576 // 2 + 960 * (576 // GROUP_SIZE) * 2 * 2


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_layers_compute_close_to_the_float_layer_they_replace(kernel, dtype):
    w, b = weight(576, 960), torch.randn(960)
    ref = nn.Linear(576, 960)
    ref.weight.data, ref.bias.data = w, b
    x = rows(5, 576, torch.float32, seed=4)
    want = ref(x)
    got = KERNELS[kernel](w, b, dtype)(x.to(dtype)).float()
    error = float((got - want).norm() / want.norm())
    assert error < {"int8": 0.02, "int4": 0.12}[kernel], error


def test_int4_gives_back_the_codes_of_weights_already_on_its_grid():
    # a llama.cpp Q4_1 block is d * q + m with q in 0..15 spanning its min and max: re-quantizing its values
    # in float32 must give back q exactly (so the int4 mode adds no error to a Q4_1 GGUF's layers)
    g = torch.Generator().manual_seed(5)
    q = torch.randint(0, 16, (64, 128), generator=g)
    q[:, ::GROUP_SIZE], q[:, 1::GROUP_SIZE] = 0, 15
    d = torch.rand(64, 128 // GROUP_SIZE, 1, generator=g) * 0.01 + 1e-3
    m = -torch.rand(64, 128 // GROUP_SIZE, 1, generator=g) * 0.05
    w = (d * q.reshape(64, -1, GROUP_SIZE).float() + m).reshape(64, 128)
    codes, _, _ = quantize_groups(w)
    assert torch.equal(codes, q.int())


def test_int8_embedding_reads_the_rows_the_head_multiplies_by():
    table = weight(64, 100)  # (100 tokens, 64)
    head = Int8Linear.from_float(table, None, torch.float32)
    embedding = Int8Embedding(head.codes, head.scales, torch.float32)
    ids = torch.tensor([0, 7, 99, 7])
    assert torch.equal(embedding(ids), head.dequantized()[ids])
    codes, scales = quantize_rows(table)
    assert float((codes.float() * scales[:, None] - table).abs().max()) <= float(scales.max()) / 2 + 1e-7


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_a_float32_layer_hands_its_kernel_bfloat16_rows_and_answers_in_float32(kernel):
    # torch's weight-only kernels are vectorized for bfloat16 activations only (models/quant/kernel_dtype.py):
    # a float32 network's quantized layers must not take the scalar float32 loop, and their result is the
    # bfloat16 layer's, in float32
    w, b = weight(576, 960), torch.randn(960)
    x = rows(7, 576, torch.float32, seed=6)
    got = KERNELS[kernel](w, b, torch.float32)(x)
    assert got.dtype == torch.float32
    want = KERNELS[kernel](w, None, torch.bfloat16)(x.to(torch.bfloat16)).float() + b
    assert torch.equal(got, want)
