"""Swap a float network's projections for the weight-only int8 / int4 layers (models/quant/int8.py, int4.py).

Every eligible `nn.Linear` (exactly that type, its name not skipped) becomes an Int8Linear (mode int8) or an
Int4Linear (mode int4). The LM head becomes an Int8Linear in both modes: 4-bit codes cost the head's
ranking of 49k tokens more than they save (llama.cpp keeps the default GGUF's token table in Q8_0, too); a
tied embedding then reads its rows from the same int8 codes (Int8Embedding), so the table is held once.
Norms stay in the compute dtype.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models.quant.int4 import Int4Linear
from models.quant.int8 import Int8Embedding, Int8Linear

WEIGHT_ONLY_MODES = ("int8", "int4")


def quantize_weight_only(module: nn.Module, mode: str, dtype: torch.dtype, skip: Iterable[str]) -> nn.Module:
    """Swap `module`'s eligible Linears (in place) for `mode` layers computing in `dtype`; returns `module`.
    A LlamaNetwork's LM head and embedding go to int8 (see the module docstring); the rest is cast to `dtype`."""
    from models.llama import LlamaNetwork

    skip = frozenset(skip)
    targets = [(name, m) for name, m in module.named_modules()
               if type(m) is nn.Linear and name not in skip and name.rsplit(".", 1)[-1] not in skip]
    for name, linear in targets:
        layer = _swap(linear, mode, dtype)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, layer)
    if isinstance(module, LlamaNetwork):
        _quantize_head_and_embedding(module, dtype)
    for m in module.modules():
        if isinstance(m, (Int8Linear, Int4Linear, Int8Embedding)):
            continue
        for pname, p in list(m.named_parameters(recurse=False)):
            setattr(m, pname, nn.Parameter(p.detach().to(dtype), requires_grad=False))
    return module.eval()


def _swap(linear: nn.Linear, mode: str, dtype: torch.dtype) -> nn.Module:
    weight, bias = linear.weight.detach(), linear.bias
    if mode == "int8":
        return Int8Linear.from_float(weight, bias, dtype)
    return Int4Linear(weight, bias, dtype)


def _quantize_head_and_embedding(net: nn.Module, dtype: torch.dtype) -> None:
    embedding = net.embed_tokens
    if not isinstance(embedding, nn.Embedding):
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
