"""Optional weight quantization with bitsandbytes (the `quant` extra): int8, nf4 or fp4 linear layers.

`quantize(net, mode)` swaps every projection of a loaded network (q/k/v, o, gate/up, down and an untied
LM head) for a bitsandbytes layer holding the same weights quantized; the embedding (and so a tied head)
and the norms stay in float32. On CPU this saves memory (int8 4x, nf4/fp4 about 7x on those weights),
not time: bitsandbytes' CPU kernels dequantize per call and are slower than float32 matmuls.
"""
from __future__ import annotations

import torch
from torch import nn

MODES = ("int8", "nf4", "fp4")


class QuantizationError(ValueError):
    """The requested quantization is unknown or bitsandbytes cannot provide it here."""


def quantize(net: nn.Module, mode: str) -> nn.Module:
    """Replace the network's nn.Linear layers by bitsandbytes int8 / 4-bit ones, in place; returns `net`."""
    if mode not in MODES:
        raise QuantizationError(f"unknown quantization {mode!r} (supported: {', '.join(MODES)})")
    try:
        import bitsandbytes as bnb
    except ImportError as exc:  # an optional dependency
        raise QuantizationError("quantization needs bitsandbytes (pip install 'genq[quant]')") from exc

    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, _quantized(bnb, child, mode))
    return net


def _quantized(bnb, linear: nn.Linear, mode: str) -> nn.Module:
    weight = linear.weight.detach()
    has_bias = linear.bias is not None
    if mode == "int8":
        # threshold 0: no outlier decomposition, every column int8 (the CPU path has no mixed fp16 part)
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                    has_fp16_weights=False, threshold=0.0, device="meta")
        layer.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                  compute_dtype=weight.dtype, quant_type=mode, device="meta")
        layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type=mode)
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    # moving to the device quantizes the weights (bitsandbytes does it in Params.to / .cpu)
    return layer.to(weight.device)


def linear_weight_bytes(net: nn.Module) -> int:
    """Bytes held by the weights of the network's linear layers (quantized or not), for reports."""
    total = 0
    for module in net.modules():
        if isinstance(module, nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
    return total
