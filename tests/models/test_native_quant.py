"""The q4 / q8 layers on genq's own kernels (models/quant/qdot.py, models/quant/native/qdot.c): the build for
this CPU gives the portable scalar path's bits, a row's result ignores the other rows (batch invariance), the
codes hold what they should, and a machine that cannot build the kernels gets a clear refusal."""
from __future__ import annotations

import pytest
import torch

from models.quant import QuantizationError, compute_dtype_name
from models.quant.native import NativeUnavailable, build, isa_name, library
from models.quant.qdot import QdotLinear


def layer(n: int, k: int, bits: int, isa: str = "auto", seed: int = 0) -> tuple[torch.Tensor, QdotLinear]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    return w, QdotLinear(w, None, torch.float32, bits, isa=isa)


def rows(m: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("isa", ["avx2", "avx-vnni", "auto"])  # each no more than this CPU has
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_instruction_set_gives_the_portable_paths_bits(isa, bits, dtype):
    # 40 columns: 5 groups of 8, so the AVX-512 path's odd group goes through the AVX2 code too
    w, native = layer(40, 96, bits, isa=isa)
    scalar = QdotLinear(w, None, torch.float32, bits, isa="scalar")
    assert isa_name(scalar._lib) == "scalar"
    for m in (1, 2, 3, 4, 5, 9):
        x = rows(m, 96, seed=m).to(dtype) * (10.0 ** (m % 3 - 1))  # rows of several magnitudes
        got, want = native(x), scalar(x)
        assert got.dtype == dtype
        assert torch.equal(got, want), (isa_name(native._lib), bits, dtype, m)


@pytest.mark.parametrize("bits", [4, 8])
def test_a_row_gets_the_same_bits_alone_and_among_any_others(bits):
    _, lin = layer(64, 128, bits)
    x = rows(11, 128)
    together = lin(x)
    for i in range(11):
        assert torch.equal(lin(x[i:i + 1]), together[i:i + 1])
    shuffled = torch.cat([rows(5, 128, seed=7), x[3:4], rows(2, 128, seed=8)])
    assert torch.equal(lin(shuffled)[5], together[3])


@pytest.mark.parametrize("bits", [4, 8])
def test_the_layer_computes_llama_cpps_block_formula(bits):
    """out = sum over blocks of d * dx * (exact integer q . xq) [+ m * sum(x)], xq the row rounded to int8 per
    block of 32 (scale max|x| / 127): checked in float64 against the codes as dequantized() reads them."""
    w, lin = layer(48, 160, bits)
    x = rows(3, 160)
    blocks32 = x.reshape(3, 5, 32)
    dx32 = blocks32.abs().amax(-1, keepdim=True) / 127  # rounded to int8 as the kernel does, in float32
    xq = torch.round(blocks32 * (1 / dx32)).clamp(-127, 127).double()
    blocks, dx = blocks32.double(), dx32.double()
    deq = lin.dequantized().double().reshape(48, 5, 32)
    scales = lin.scales.double().transpose(1, 2).reshape(48, 5, 1)
    if bits == 4:
        offsets = lin.offsets.double().transpose(1, 2).reshape(48, 5, 1)
        q = torch.round((deq - offsets) / scales)
        want = torch.einsum("rbj,nbj,nb,rb->rn", xq, q, scales[..., 0], dx[..., 0]) + \
            torch.einsum("nb,rb->rn", offsets[..., 0], blocks.sum(-1))
    else:
        q = torch.round(deq / scales)
        want = torch.einsum("rbj,nbj,nb,rb->rn", xq, q, scales[..., 0], dx[..., 0])
    assert torch.allclose(lin(x).double(), want, rtol=1e-5, atol=1e-5)
    # and the codes are close to the float weight
    error = float((lin.dequantized() - w).norm() / w.norm())
    assert error < {4: 0.12, 8: 0.01}[bits], error


def test_a_q4_1_weight_comes_back_exactly():
    # every block a float16 scale and minimum and codes 0..15 (a GGUF Q4_1 tensor, dequantized)
    g = torch.Generator().manual_seed(3)
    n, k = 16, 64
    codes = torch.randint(0, 16, (n, k // 32, 32), generator=g)
    codes[..., 0], codes[..., 1] = 0, 15  # each block spans its whole range, as Q4_1's min/max rounding makes it
    scale = (torch.rand(n, k // 32, 1, generator=g) * 0.01 + 0.001).half().float()
    low = (torch.rand(n, k // 32, 1, generator=g) * -0.05).half().float()
    w = (codes * scale + low).reshape(n, k)
    lin = QdotLinear(w, None, torch.float32, 4)
    assert torch.allclose(lin.dequantized(), w, rtol=0, atol=1e-6)


def test_shapes_the_kernels_cannot_take_are_refused():
    with pytest.raises(QuantizationError, match="divisible by 32"):
        QdotLinear(torch.zeros(16, 40), None, torch.float32, 4)
    with pytest.raises(QuantizationError, match="out_features by 8"):
        QdotLinear(torch.zeros(12, 64), None, torch.float32, 8)
    with pytest.raises(QuantizationError, match="4- or 8-bit"):
        QdotLinear(torch.zeros(16, 64), None, torch.float32, 3)


def test_without_a_compiler_the_mode_is_refused_saying_why(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(NativeUnavailable, match="need a C compiler"):
        build()
    assert issubclass(NativeUnavailable, QuantizationError)


def test_a_build_is_cached_by_its_source_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_NATIVE_CACHE", str(tmp_path))
    first = build("scalar")
    mtime = first.stat().st_mtime_ns
    assert build("scalar") == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    assert build("auto") != first or isa_name(library()) == "scalar"


def test_auto_is_float32_for_the_q_modes_on_the_cpu():
    assert compute_dtype_name("q4", "auto") == "float32"
    assert compute_dtype_name("q8", "auto") == "float32"
    assert compute_dtype_name("q4", "bfloat16") == "bfloat16"  # asked for: kept
    from models.dtypes import resolve_dtype

    assert compute_dtype_name("int4", "auto") == resolve_dtype("auto")


@pytest.mark.parametrize("bits", [4, 8])
def test_a_bias_is_added_in_the_compute_dtype(bits):
    w = torch.randn(24, 64) * 0.05
    bias = torch.randn(24)
    with_bias = QdotLinear(w, bias, torch.float32, bits)
    without = QdotLinear(w, None, torch.float32, bits)
    x = rows(3, 64)
    assert torch.equal(with_bias(x), without(x) + bias)


@pytest.mark.parametrize(("bits", "bytes_per_weight"), [(4, 0.5 + 4 / 32), (8, 1 + 2 / 32)])
def test_the_weights_take_the_bytes_the_mode_promises(bits, bytes_per_weight):
    from models.quant import weight_bytes

    _, lin = layer(64, 256, bits)
    assert weight_bytes(lin) == 64 * 256 * bytes_per_weight  # codes and float16 scales (and minimums)


def test_a_copy_reads_its_own_weights_once_the_original_is_gone():
    import copy
    import gc

    _, lin = layer(32, 64, 4)
    x = rows(2, 64)
    want = lin(x)  # the original has read (and kept) its weights' addresses
    twin = copy.deepcopy(lin)
    del lin
    gc.collect()
    torch.randn(32, 64 * 64)  # let other tensors take the freed memory
    assert torch.equal(twin(x), want)
    assert twin._weights()[0] == twin.codes.data_ptr()


@pytest.mark.parametrize("bits", [4, 8])
def test_packing_a_few_rows_at_a_time_gives_the_whole_weights_packing(bits, monkeypatch):
    import models.quant.rows as rows_module

    w = torch.randn(48, 64)
    whole = QdotLinear(w, None, torch.float32, bits)
    monkeypatch.setattr(rows_module, "ROWS_AT_A_TIME", 16)
    pieces = QdotLinear(w, None, torch.float32, bits)
    for name in ("codes", "scales", "offsets"):
        assert torch.equal(getattr(pieces, name), getattr(whole, name)), name


def test_int8_rows_quantized_a_few_at_a_time_are_the_whole_tables(monkeypatch):
    import models.quant.int8 as int8
    import models.quant.rows as rows_module

    w = torch.randn(40, 64)
    codes, scales = int8.quantize_rows(w)
    monkeypatch.setattr(rows_module, "ROWS_AT_A_TIME", 16)
    codes16, scales16 = int8.quantize_rows(w)
    assert torch.equal(codes16, codes) and torch.equal(scales16, scales)
