"""Swap a float network's projections for weight-only quantized layers.

| mode | projections | LM head | kernels |
| --- | --- | --- | --- |
| int8 | Int8Linear | Int8Linear | torch's (int8.py), bfloat16 activations |
| int4 | Int4Linear | Int8Linear | torch's (int4.py), bfloat16 activations |
| q8 | QdotLinear, 8-bit | QdotLinear, 8-bit | genq's (qdot.py), int8 activations |
| q4 | QdotLinear, 4-bit | QdotLinear, 8-bit | genq's (qdot.py), int8 activations |

Every eligible `nn.Linear` (exactly that type, its name not skipped) is swapped. The LM head stays 8-bit in
the 4-bit modes: 4-bit codes cost the head's ranking of 49k tokens more than they save (llama.cpp keeps the
default GGUF's token table in Q8_0, too). A tied embedding reads its rows from int8 codes (Int8Embedding): the
int8 head's own codes in mode int8 / int4, a table of its own in q8 / q4 (whose head codes are laid out for the
kernel). Norms stay in the compute dtype. In q8 / q4 computing in float32, the layers' other operators run fused
in C too (models/fused_layers.py).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models.quant.int4 import Int4Linear
from models.quant.int8 import Int8Embedding, Int8Linear
from models.quant.qdot import QdotLinear

WEIGHT_ONLY_MODES = ("int8", "int4", "q8", "q4")
QDOT_BITS = {"q8": 8, "q4": 4}


def quantize_weight_only(module: nn.Module, mode: str, dtype: torch.dtype, skip: Iterable[str],
                         prefix: str = "") -> nn.Module:
    """Swap `module`'s eligible Linears (in place) for `mode` layers computing in `dtype`; returns `module`.
    A LlamaNetwork's LM head and embedding go to int8 (see the module docstring); the rest is cast to `dtype`.
    `prefix`: the module's name in its network (`layers.3`), for a layer quantized as it is loaded; `skip`
    names layers by their full names in the network."""
    from models.fused_layers import FusedOps
    from models.llama import LlamaNetwork

    skip = frozenset(skip)
    targets = [(name, m) for name, m in module.named_modules()
               if type(m) is nn.Linear and (f"{prefix}.{name}" if prefix else name) not in skip
               and name.rsplit(".", 1)[-1] not in skip]
    for name, linear in targets:
        layer = _swap(linear, mode, dtype)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, layer)
    if isinstance(module, LlamaNetwork):
        _quantize_head_and_embedding(module, mode, dtype)
        if mode in QDOT_BITS and dtype == torch.float32:  # its layers' small operators fused (fused_layers.py)
            module.fused_ops = FusedOps()
    for m in module.modules():
        if isinstance(m, (Int8Linear, Int4Linear, Int8Embedding, QdotLinear)):
            continue
        for pname, p in list(m.named_parameters(recurse=False)):
            setattr(m, pname, nn.Parameter(p.detach().to(dtype), requires_grad=False))
    return module.eval()


def _swap(linear: nn.Linear, mode: str, dtype: torch.dtype) -> nn.Module:
    weight, bias = linear.weight.detach(), linear.bias
    if mode in QDOT_BITS:
        return QdotLinear(weight, bias, dtype, QDOT_BITS[mode])
    if mode == "int8":
        return Int8Linear.from_float(weight, bias, dtype)
    return Int4Linear(weight, bias, dtype)


def _quantize_head_and_embedding(net: nn.Module, mode: str, dtype: torch.dtype) -> None:
    embedding = net.embed_tokens
    if not isinstance(embedding, nn.Embedding):
        return
    if mode in QDOT_BITS:
        if net.lm_head is None or type(net.lm_head) is nn.Linear:
            head = embedding.weight if net.lm_head is None else net.lm_head.weight
            net.lm_head = QdotLinear(head, None if net.lm_head is None else net.lm_head.bias, dtype, 8)
        table = Int8Linear.from_float(embedding.weight, None, dtype)
        net.embed_tokens = Int8Embedding(table.codes, table.scales, dtype)
        return
    if net.lm_head is None:  # tied: one int8 table serves both
        head = Int8Linear.from_float(embedding.weight, None, dtype)
        net.lm_head = head
        net.embed_tokens = Int8Embedding(head.codes, head.scales, dtype)
    else:
        if type(net.lm_head) is nn.Linear:
            net.lm_head = Int8Linear.from_float(net.lm_head.weight, net.lm_head.bias, dtype)
        table = Int8Linear.from_float(embedding.weight, None, dtype)
        net.embed_tokens = Int8Embedding(table.codes, table.scales, dtype)
