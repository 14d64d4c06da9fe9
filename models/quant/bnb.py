"""Weight quantization at load time through bitsandbytes: bnb_int8 | nf4 | fp4 (the CUDA path; an option on the CPU).

Every eligible `nn.Linear` of an already loaded float network is swapped for its bitsandbytes layer,
built from the float weights it replaces (biases kept unquantized, in the compute dtype):
- bnb_int8: `Linear8bitLt` (LLM.int8(): int8 weights with one float scale per output row; activations are
  cast to float16, quantized per row and multiplied in int8; with a threshold > 0, input columns holding a
  value above it are multiplied in float16 instead: see `int8_threshold`);
- nf4 / fp4: `Linear4bit` (two 4-bit codes per byte, one absmax per block of 64 weights).
The embedding and the LM head stay unquantized by default (`DEFAULT_SKIP`); they and the norms are cast to the
compute dtype.

Refusals are `QuantizationError` (a ValueError), raised at load and never turned into a silent fallback to
another mode: an unknown mode, a device other than cpu and cuda, a missing or too old bitsandbytes, or a
mode the installed kernels cannot run on the device (a tiny probe layer is tried) before any weight is
read; then any layer the kernels cannot run (each swapped layer is tried once), naming the layer.

bitsandbytes is imported lazily, so `BNB_MODES` and the checks that need no kernels work without it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from models.quant.errors import QuantizationError

BNB_MODES = ("bnb_int8", "nf4", "fp4")
DEFAULT_SKIP = frozenset({"lm_head", "embed_tokens"})
# 0.46.0 is the first release whose torch.library backends have CPU ops for these layers; only 0.50.2 is tested.
MIN_BITSANDBYTES = (0, 46, 0)
TESTED_BITSANDBYTES = "0.50.2"
DEVICE_TYPES = ("cpu", "cuda")
FOUR_BIT_BLOCKSIZE = 64
# LLM.int8()'s outlier threshold by device type. 6.0 is the published setting (and transformers' default).
# On the CPU bitsandbytes finds and multiplies the outlier columns in plain PyTorch: on the default model that
# made a batch-64 decode step 4.6x slower, with the same next-token agreement with float32 (0.891 on
# models.quant_bench's text), so the CPU does without.
INT8_THRESHOLD = {"cuda": 6.0, "cpu": 0.0}


def check_bnb(mode: str, device: torch.device | str = "cpu") -> None:
    """Refuse bitsandbytes `mode` on `device` unless the installed bitsandbytes can run it there (a tiny layer
    is tried)."""
    dev = torch.device(device)
    if dev.type not in DEVICE_TYPES:
        raise QuantizationError(f"quantization {mode!r} runs on {' or '.join(DEVICE_TYPES)}, not {dev.type}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QuantizationError(f"quantization {mode!r} on {dev} needs CUDA, which this torch "
                                f"({torch.__version__}) cannot use")
    bnb = _bitsandbytes(mode)
    installed = _version_tuple(bnb.__version__)
    if installed < MIN_BITSANDBYTES:
        need = ".".join(map(str, MIN_BITSANDBYTES))
        raise QuantizationError(f"{mode} on {dev.type} needs bitsandbytes >= {need} "
                                f"(installed: {bnb.__version__}; tested: {TESTED_BITSANDBYTES})")
    probe = nn.Linear(FOUR_BIT_BLOCKSIZE, 32, bias=True).eval()
    layer = _swap(bnb, probe, mode, dev, torch.float32, INT8_THRESHOLD[dev.type])
    _validated(layer, "a probe layer", mode, dev, torch.float32)


def quantize_bnb(module: nn.Module, mode: str, device: torch.device | str = "cpu",
                     compute_dtype: torch.dtype | None = None, skip: Iterable[str] = DEFAULT_SKIP,
                     int8_threshold: float | None = None) -> nn.Module:
    """Swap every eligible nn.Linear of `module` (in place) for its `mode` layer on `device`; returns `module`.

    Eligible: exactly `nn.Linear` (not a subclass), and neither its full name (`layers.0.mlp.down_proj`) nor
    its last name part (`lm_head`) is in `skip`. Everything else (embeddings, norms, skipped layers) is
    moved to `device`, its floating parameters cast to `compute_dtype`. `compute_dtype` is what the network
    computes in (default: the dtype of the weights, and nothing is cast); the swapped layers' inputs and
    outputs keep their dtype. `int8_threshold` (bnb_int8 only) is LLM.int8()'s outlier
    threshold, 0 for none; by default INT8_THRESHOLD of the device type. Every swapped layer is run once on
    a dummy input, so a layer the kernels cannot run is refused here, naming it, and CPU weight repacking
    happens now rather than on the first request.
    """
    check_bnb(mode, device)
    dev = torch.device(device)
    bnb = _bitsandbytes(mode)
    skip = frozenset(skip)
    threshold = INT8_THRESHOLD[dev.type] if int8_threshold is None else int8_threshold
    targets = [(name, m) for name, m in module.named_modules()
               if type(m) is nn.Linear and name not in skip and name.rsplit(".", 1)[-1] not in skip]
    swapped: set[int] = set()
    for name, linear in targets:
        dtype = compute_dtype or linear.weight.dtype
        layer = _validated(_swap(bnb, linear, mode, dev, dtype, threshold), name, mode, dev, dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name), child, layer)
        swapped.add(id(layer))
    _move_the_rest(module, dev, swapped, compute_dtype)
    return module


def _swap(bnb: Any, linear: nn.Linear, mode: str, device: torch.device, compute_dtype: torch.dtype,
          int8_threshold: float) -> nn.Linear:
    """The bitsandbytes layer for `linear`, its weight quantized onto `device`, in the same train/eval mode."""
    weight = linear.weight.detach()
    bias = linear.bias is not None
    if mode == "bnb_int8":
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                    threshold=int8_threshold, device="meta")
        # Int8Params quantizes inside .to(device), and only when its float data is on the CPU
        layer.weight = bnb.nn.Int8Params(weight.cpu(), requires_grad=False, has_fp16_weights=False).to(device)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=compute_dtype,
                                  compress_statistics=False, quant_type=mode, device="meta")
        # Params4bit quantizes inside .to(device), from wherever the float data is
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, blocksize=FOUR_BIT_BLOCKSIZE,
                                         compress_statistics=False, quant_type=mode, module=layer).to(device)
    if bias:
        # in the compute dtype, as the layers' own forward would cast it on its first call
        layer.bias = nn.Parameter(linear.bias.detach().to(device=device, dtype=compute_dtype), requires_grad=False)
    return layer.train(linear.training)


def _validated(layer: nn.Linear, name: str, mode: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Run `layer` on one row and on three rows (single-token and batched kernels differ) or refuse it."""
    hint = ""
    if device.type == "cpu" and mode in ("nf4", "fp4"):
        hint = (f"; bitsandbytes' AVX512-BF16 CPU 4-bit kernel needs in_features divisible by {FOUR_BIT_BLOCKSIZE} "
                "and out_features by 32")
    shape = f"(in {layer.in_features}, out {layer.out_features})"
    try:
        with torch.no_grad():
            for rows in (1, 3):
                out = layer(torch.ones(rows, layer.in_features, dtype=dtype, device=device))
                if out.shape != (rows, layer.out_features) or not bool(torch.isfinite(out).all()):
                    raise RuntimeError(f"for ones of shape ({rows}, {layer.in_features}) it gave "
                                       f"{tuple(out.shape)}, or values that are not finite")
    except Exception as e:
        import bitsandbytes

        raise QuantizationError(f"bitsandbytes {bitsandbytes.__version__} cannot run {mode} on {device} for "
                                f"{name} {shape}: {type(e).__name__}: {e}{hint}") from e
    return layer


def _move_the_rest(module: nn.Module, device: torch.device, swapped: set[int], dtype: torch.dtype | None) -> None:
    """Move every parameter and buffer outside the swapped layers to `device`, keeping tied ones tied; floating
    parameters (norms, embeddings, skipped layers) are cast to `dtype`, the compute dtype, unless it is None.
    The network is read in float32 for quantizing (models/quant/__init__.py), so without the cast its norms
    and embeddings would stay float32 in a bfloat16 network, and so would what reads its dtype from them."""
    moved: dict[int, nn.Parameter] = {}
    for m in module.modules():
        if id(m) in swapped:
            continue
        for name, p in list(m.named_parameters(recurse=False)):
            if id(p) not in moved:
                cast = dtype if dtype is not None and p.is_floating_point() else p.dtype
                moved[id(p)] = nn.Parameter(p.detach().to(device=device, dtype=cast), requires_grad=p.requires_grad)
            setattr(m, name, moved[id(p)])
        for name, b in list(m.named_buffers(recurse=False)):
            setattr(m, name, b.to(device))


def _bitsandbytes(mode: str) -> Any:
    """bitsandbytes, imported once, with two log lines it prints on our path silenced (see below)."""
    # On AVX512-BF16 CPUs it logs at import that an optional kernel from the `kernels` hub package could not be
    # fetched (its built-in CPU kernel is used instead), and int8 logs on every forward that float32 inputs are
    # cast to float16, which is how LLM.int8() works. Neither says anything actionable for us.
    for logger_name, prefix in (("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
                                ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast")):
        logger = logging.getLogger(logger_name)
        if not any(isinstance(f, _DropPrefix) for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))
    try:
        import bitsandbytes
    except ImportError as e:
        need = ".".join(map(str, MIN_BITSANDBYTES))
        raise QuantizationError(f"quantization {mode!r} needs bitsandbytes >= {need}: "
                                f"pip install 'bitsandbytes>={need}' ({e})") from e
    return bitsandbytes


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _version_tuple(version: str) -> tuple[int, ...]:
    """'0.50.2' -> (0, 50, 2); suffixes such as '.dev0' or '+cu121' end the comparison."""
    parts = []
    for piece in version.split("+")[0].split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)
