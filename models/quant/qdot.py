"""Weight-only 4-bit and 8-bit layers whose activations are quantized to int8 on the fly (the q4 / q8 modes), on
genq's own CPU kernels (models/quant/native/qdot.c): llama.cpp's recipe of Q4_1 / Q8_0 weight blocks against
Q8_1 activation blocks, an exact integer dot product per block of 32, then float32 scales.

Why: torch's weight-only kernels (int4.py, int8.py) convert every weight back to a float before multiplying,
and at one to a few rows they are bound by that arithmetic, not by the bytes they read (one 576 x 960 layer of
the default model at one row: 44 us, about 6 GB/s of 4-bit weights, on a 2-core Xeon). Integer products of
4 weights at a time (AVX2's maddubs, AVX-VNNI's dpbusd) cost a fraction of that.

- 4-bit: blocks of 32 weights with a scale d and an offset m (w = d * q + m, q in 0..15, min/max rounding as
  int4.py's groups: a Q4_1 GGUF's own codes come back);
- 8-bit: blocks of 32 with a scale (w = d * q, q in -127..127).
The activations' rounding to int8 per block of 32 is what the modes add to the weights' error.

Batch invariance: every output element is computed by the same operations in the same order whatever the other
rows (qdot.c), so the layers are `row_independent` and run with no padded tile (models/invariant_ops.project).
"""
from __future__ import annotations

import torch
from torch import nn

from models.quant.errors import QuantizationError
from models.quant.int4 import quantize_groups
from models.quant.native import library
from models.quant.rows import by_rows

BLOCK = 32  # weights per block along K, with their own scale
COLUMNS = 8  # output columns interleaved in the kernels' layout


def _groups(t: torch.Tensor) -> torch.Tensor:
    """(N, nb) per-column block values -> the kernels' (N / 8, nb, 8), in float16."""
    n, nb = t.shape
    return t.to(torch.float16).reshape(n // COLUMNS, COLUMNS, nb).transpose(1, 2).contiguous()


def pack_q4(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A float weight (N, K) as the kernels' 4-bit codes (N/8, nb, 4, 32) uint8, scales and offsets (N/8, nb, 8)."""
    return by_rows(_pack_q4, weight)  # a slice of rows at a time (rows.py)


def pack_q8(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A float weight (N, K) as the kernels' 8-bit codes (N/8, nb, 8, 32) int8 and scales (N/8, nb, 8)."""
    return by_rows(_pack_q8, weight)


def _pack_q4(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    n, k = weight.shape
    nb = k // BLOCK
    codes, scales, zeros = quantize_groups(weight, BLOCK)  # w ~ (q - 8) * scale + zero
    # GGUF's Q4_1 holds min and scale in float16: a Q4_1 file's blocks come back as they are
    c = codes.to(torch.uint8).reshape(n // COLUMNS, COLUMNS, nb, BLOCK).permute(0, 2, 1, 3)  # (g, nb, col, 32)
    # vector i, byte 4 col + t: weight 4i + t in the low nibble, 16 + 4i + t in the high one
    lo = c[..., :16].reshape(n // COLUMNS, nb, COLUMNS, 4, 4).permute(0, 1, 3, 2, 4)
    hi = c[..., 16:].reshape(n // COLUMNS, nb, COLUMNS, 4, 4).permute(0, 1, 3, 2, 4)
    packed = (lo | (hi << 4)).reshape(n // COLUMNS, nb, 4, 32).contiguous()
    return packed, _groups(scales), _groups(zeros - 8.0 * scales)  # w ~ scale * q + min


def _pack_q8(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    n, k = weight.shape
    nb = k // BLOCK
    w = weight.detach().float().reshape(n, nb, BLOCK)
    scales = (w.abs().amax(dim=-1) / 127.0).clamp(min=1e-12)
    codes = torch.round(w / scales[..., None]).clamp_(-127, 127).to(torch.int8)
    # vector i, byte 4 col + t: weight 4i + t of column col
    c = codes.reshape(n // COLUMNS, COLUMNS, nb, 8, 4).permute(0, 2, 3, 1, 4)  # (g, nb, i, col, t)
    return c.reshape(n // COLUMNS, nb, 8, 32).contiguous(), _groups(scales)


class QdotLinear(nn.Module):
    """A Linear on the q4 / q8 kernels: weight codes of `bits` 4 or 8, inputs and outputs in `dtype`."""

    row_independent = True  # see the module docstring
    codes: torch.Tensor
    scales: torch.Tensor  # (N / 8, nb, 8) float16
    offsets: torch.Tensor  # (N / 8, nb, 8) float16 (4-bit), or empty

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, bits: int,
                 isa: str = "auto"):
        super().__init__()
        n, k = weight.shape
        if bits not in (4, 8):
            raise QuantizationError(f"qdot layers hold 4- or 8-bit codes, not {bits}")
        if k % BLOCK or n % COLUMNS:
            raise QuantizationError(f"q{bits} needs in_features divisible by {BLOCK} and out_features by "
                                    f"{COLUMNS}, not (in {k}, out {n})")
        self.out_features, self.in_features, self.bits, self.isa = n, k, bits, isa
        self._lib = library(isa)
        if bits == 4:
            codes, scales, offsets = pack_q4(weight)
        else:
            codes, scales = pack_q8(weight)
            offsets = torch.empty(0)
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.register_buffer("offsets", offsets)
        self.register_parameter("bias", None if bias is None else
                                nn.Parameter(bias.detach().to(dtype), requires_grad=False))

    def __getstate__(self) -> dict[str, object]:
        state = dict(super().__getstate__())
        state.pop("_cached_weights", None)  # a copy (deepcopy, pickle) holds other memory: it reads its own
        state.pop("_lib", None)  # a loaded library is not copied: the copy loads it again (cached)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self._lib = library(self.isa)

    def _weights(self) -> tuple[int, int, int]:
        """The codes', scales' and offsets' addresses, kept between calls (a forward of one row costs a few
        microseconds, and reading three data_ptr()s through nn.Module's attribute lookup was a third of it);
        read again whenever a buffer is replaced (.to(), load_state_dict)."""
        buffers = self._buffers  # read directly: nn.Module's __getattr__ costs more than the lookups
        codes, scales, offsets = buffers["codes"], buffers["scales"], buffers["offsets"]
        cached = self.__dict__.get("_cached_weights")
        if cached is None or cached[0] is not codes or cached[1] is not scales or cached[2] is not offsets:
            if codes is None or scales is None or offsets is None:
                raise RuntimeError("QdotLinear: a weight buffer was removed")
            cached = (codes, scales, offsets, (codes.data_ptr(), scales.data_ptr(), offsets.data_ptr()))
            self.__dict__["_cached_weights"] = cached
        addresses: tuple[int, int, int] = cached[3]
        return addresses

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype is not torch.float32 and dtype is not torch.bfloat16:
            x = x.float()
        x = x.contiguous()
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"QdotLinear: input {tuple(x.shape)}, expected (rows, {self.in_features})")
        rows = x.shape[0]
        out = torch.empty(rows, self.out_features, dtype=x.dtype)
        bf16 = int(x.dtype is torch.bfloat16)
        codes, scales, offsets = self._weights()
        if rows and self._lib.genq_qdot_linear(x.data_ptr(), bf16, rows, self.in_features, self.bits, codes, scales,
                                               offsets, self.out_features, out.data_ptr(), bf16):
            raise MemoryError("qdot kernel: no scratch memory")
        if out.dtype is not dtype:
            out = out.to(dtype)
        bias = self._parameters["bias"]
        return out if bias is None else out + bias

    def dequantized(self) -> torch.Tensor:
        """The weight (N, K) the codes stand for, in float32 (for tests and comparisons)."""
        n, k = self.out_features, self.in_features
        nb = k // BLOCK
        scales = self.scales.float().transpose(1, 2).reshape(n, nb, 1)
        if self.bits == 8:
            c = self.codes.reshape(n // COLUMNS, nb, 8, COLUMNS, 4).permute(0, 3, 1, 2, 4)  # (g, col, nb, i, t)
            return (c.reshape(n, nb, BLOCK).float() * scales).reshape(n, k)
        c = self.codes.reshape(n // COLUMNS, nb, 4, COLUMNS, 4).permute(0, 3, 1, 2, 4)  # (g, col, nb, i, t)
        lo, hi = (c & 0x0F).reshape(n, nb, 16), (c >> 4).reshape(n, nb, 16)
        offsets = self.offsets.float().transpose(1, 2).reshape(n, nb, 1)
        return (torch.cat([lo, hi], dim=-1).float() * scales + offsets).reshape(n, k)
