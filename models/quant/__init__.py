"""Weight quantization at load time, one mode per model (`GENQ_MODELS=name=path:int4`).

| mode | kernels | where |
| --- | --- | --- |
| none | the compute dtype's own GEMM | any device |
| int8, int4 | torch's weight-only kernels (models/quant/int8.py, int4.py; swap in weight_only.py) | CPU |
| q8, q4 | genq's own int8-activation kernels (models/quant/qdot.py, native/qdot.c, built on first use) | CPU |
| bnb_int8, nf4, fp4 | bitsandbytes (models/quant/bnb.py) | CUDA, and the CPU |

A mode is checked before any weight is read and refused (`QuantizationError`, a ValueError) when it is unknown
or cannot run on the device; never a silent fallback to another mode.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.quant.bnb import BNB_MODES, DEFAULT_SKIP, check_bnb, quantize_bnb
from models.quant.errors import QuantizationError
from models.quant.native import library
from models.quant.weight_only import QDOT_BITS, WEIGHT_ONLY_MODES, quantize_weight_only

if TYPE_CHECKING:
    from models.config import ModelConfig
    from models.llama import LlamaNetwork

QUANT_MODES = ("none", *WEIGHT_ONLY_MODES, *BNB_MODES)

__all__ = ["QUANT_MODES", "QuantizationError", "check_quantization", "compute_dtype_name", "load_quantized_network",
           "quantize_network", "weight_bytes"]


def compute_dtype_name(mode: str, dtype: str, device: torch.device | str = "cpu") -> str:
    """`dtype` for a network in `mode`: "auto" is float32 in the q4 / q8 modes on the CPU, whatever the CPU
    (their kernels take float32 rows as they are, and the attention's small products of a few rows are
    faster in float32: one decode row of the default model in q4 took 14.2 ms a step in float32 against 20.1
    in bfloat16 on a 2-core Xeon with AMX), and otherwise what models.dtypes.resolve_dtype makes of it."""
    from models.dtypes import resolve_dtype

    if dtype == "auto" and mode in QDOT_BITS and torch.device(device).type == "cpu":
        return "float32"
    return resolve_dtype(dtype, device)


def check_quantization(mode: str, device: torch.device | str = "cpu") -> None:
    """Refuse `mode` on `device` unless it can run there (for bitsandbytes, a tiny layer is tried)."""
    if mode not in QUANT_MODES:
        raise QuantizationError(f"unknown quantization {mode!r}: expected one of {', '.join(QUANT_MODES)}")
    if mode == "none":
        return
    dev = torch.device(device)
    if mode in WEIGHT_ONLY_MODES:
        if dev.type != "cpu":
            raise QuantizationError(f"quantization {mode!r} runs on the cpu, not {dev.type} "
                                    f"(on CUDA: {', '.join(BNB_MODES)})")
        if mode in QDOT_BITS:
            library()  # built here, once: NativeUnavailable says why it cannot be
        return
    check_bnb(mode, dev)


def quantize_network(module: nn.Module, mode: str, device: torch.device | str = "cpu",
                     compute_dtype: torch.dtype | None = None, skip: Iterable[str] = DEFAULT_SKIP,
                     int8_threshold: float | None = None) -> nn.Module:
    """Swap every eligible nn.Linear of `module` (in place) for its `mode` layer on `device`; returns `module`.

    Eligible: exactly `nn.Linear`, and neither its full name (`layers.0.mlp.down_proj`) nor its last name
    part (`lm_head`) is in `skip`. `compute_dtype`: the dtype the layers compute in (default: the weights').
    `int8_threshold` is bnb_int8's outlier threshold (models/quant/bnb.py). `mode="none"` only moves it.
    """
    check_quantization(mode, device)
    if mode == "none":
        return module.to(torch.device(device))
    if mode in WEIGHT_ONLY_MODES:
        dtype = compute_dtype or next(module.parameters()).dtype
        return quantize_weight_only(module, mode, dtype, skip)
    return quantize_bnb(module, mode, device, compute_dtype, skip, int8_threshold)


def load_quantized_network(source: str | Path, quantization: str = "none", dtype: torch.dtype = torch.float32,
                           device: torch.device | str = "cpu",
                           skip: Iterable[str] = DEFAULT_SKIP) -> tuple[ModelConfig, LlamaNetwork]:
    """`models.weights.load_network` with the model spec's quantization applied at load.

    The mode is checked before the weights are read. A quantized mode reads the weights in float32 on the
    CPU (the codes are rounded from the file's own values, not from a bfloat16 rounding of them); `dtype` is
    what the network computes in. The weight-only modes quantize each decoder layer as soon as the loader has
    filled it (models.weights.load_network's `on_layer`), so the float32 copy of one layer is held at a time,
    then the head and embedding; bitsandbytes quantizes the loaded network, layer by layer.
    """
    from models.fused_layers import use_native_attention
    from models.weights import load_network

    check_quantization(quantization, device)
    if quantization == "none":
        cfg, net = load_network(source, dtype=dtype, device=device)
        use_native_attention(net)  # a bfloat16 CPU network's decode rows attend in C (models/fused_layers.py)
        return cfg, net
    if quantization in WEIGHT_ONLY_MODES:  # each decoder layer quantized as soon as it is read
        skip = frozenset(skip)

        def quantize_layer(prefix: str, layer: nn.Module) -> None:
            quantize_weight_only(layer, quantization, dtype, skip, prefix)

        cfg, net = load_network(source, dtype=torch.float32, device="cpu", on_layer=quantize_layer)
    else:
        cfg, net = load_network(source, dtype=torch.float32, device="cpu")
    quantize_network(net, quantization, device=device, compute_dtype=dtype, skip=skip)
    return cfg, net


def weight_bytes(module: nn.Module) -> int:
    """Bytes the module's weights really hold: parameters, buffers (the int8/int4 codes, scales and zeros),
    bitsandbytes' packed storage and quant state, each storage counted once (tied or shared ones too)."""
    seen: set[tuple[str, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if storage.nbytes() and key not in seen:
            seen.add(key)
            total += storage.nbytes()

    for m in module.modules():
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            add(t)
        state = getattr(getattr(m, "weight", None), "quant_state", None)  # Linear4bit
        if state is not None:
            for attr in ("absmax", "code", "offset"):
                add(getattr(state, attr, None))
            nested = getattr(state, "state2", None)  # absmax quantized again (compress_statistics)
            if nested is not None:
                add(nested.absmax)
                add(nested.code)
        for holder in (getattr(m, "weight", None), getattr(m, "state", None)):  # Linear8bitLt: CB, SCB
            add(getattr(holder, "CB", None))
            add(getattr(holder, "SCB", None))
    return total
