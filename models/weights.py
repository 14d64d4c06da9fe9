"""Load a Llama-family network from a GGUF file or a Hugging Face directory.

The module is built on the `meta` device (no memory, no random init) and the weights are assigned into
it with `load_state_dict(..., assign=True)`. Both sources are first mapped to Hugging Face parameter
names without the `model.` prefix (`layers.0.self_attn.q_proj.weight`, ...), then q/k/v and gate/up are
concatenated into the fused projections the network uses (models/llama.py).

Memory: the network is filled a decoder layer at a time, each tensor read from the source (a GGUF tensor
dequantized to float32 by models.gguf, a safetensors tensor from its mapped file) and put in the compute dtype
as its layer needs it, so the load never holds the whole model in float32 beside the network it builds; the
fused projections are concatenated in the compute dtype too (the same bits as casting after concatenating:
both are exact copies). A caller that quantizes (models/quant) replaces each layer's weights as soon as the
layer is filled (`on_layer`), so the float32 copy of one layer at a time is all it holds.

GGUF specifics: tensor names are llama.cpp's (`blk.N.attn_q`, ...), and for the llama architecture the
rows of q and k are put back in Hugging Face order: llama.cpp's converter permutes them for its rotary
layout (see `unpermute_rows`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from models.config import ModelConfig, UnsupportedModel
from models.gguf import GGUFFile
from models.llama import LlamaNetwork


class WeightsError(ValueError):
    """The weights are missing, malformed, or do not match the model's config."""


# llama.cpp tensor name -> Hugging Face name (per layer names use {i})
_GGUF_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# checkpoint entries that are not weights (old transformers saved the rotary buffer)
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


Loader = Callable[[], torch.Tensor]  # reads one tensor from the source when called
LayerHook = Callable[[str, nn.Module], None]


def load_network(source: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 on_layer: LayerHook | None = None) -> tuple[ModelConfig, LlamaNetwork]:
    """The model's config and network from a .gguf file or a Hugging Face directory, in `dtype` on `device`.

    The network is filled one decoder layer at a time, each tensor read from the source as its layer needs it.
    `on_layer(prefix, layer)` is called on each layer (prefix `layers.N`) as soon as it holds its weights, before
    the next one is read: a caller that replaces the layer's weights (models/quant) never holds the whole model
    in `dtype`."""
    path = Path(source)
    if path.is_dir():
        cfg, loaders = _hf_loaders(path)
    elif path.is_file():
        cfg, loaders = _gguf_loaders(path)
    else:
        raise FileNotFoundError(f"no model at {path}: expected a .gguf file or a Hugging Face directory")
    with torch.device("meta"), _SkipInit():
        net = LlamaNetwork(cfg)
    if cfg.tie_word_embeddings:
        loaders.pop("lm_head.weight", None)  # some checkpoints store the tied copy too
    elif "lm_head.weight" not in loaders:
        raise WeightsError("lm_head.weight is missing and tie_word_embeddings is false")
    expected, given = set(net.state_dict()), {_fused_name(name) for name in loaders}
    missing, unexpected = expected - given, given - expected
    if missing or unexpected:
        raise WeightsError(f"weights do not match the config: missing {sorted(missing)[:8]}, "
                           f"unexpected {sorted(unexpected)[:8]}")
    from models.engine.memory import release_freed_heap

    def take(name: str) -> torch.Tensor:
        if name not in loaders:
            raise WeightsError(f"tensor {name} is missing")
        return loaders.pop(name)().to(device=device, dtype=dtype)

    top = {"embed_tokens": net.embed_tokens, "norm": net.norm, **({} if net.lm_head is None else
                                                                 {"lm_head": net.lm_head})}

    def fill_top() -> None:
        for prefix, module in top.items():
            _assign(module, {"weight": take(f"{prefix}.weight")}, prefix)

    # The embedding's float32 dequantization (113 MiB for the default model) is the load's largest temporary:
    # first, beside nothing else, when the layers stay as they are read; last when a hook shrinks each layer
    # (its float32 table is then quantized beside the layers' codes, not held while they are read).
    if on_layer is None:
        fill_top()
    for i, layer in enumerate(net.layers):
        prefix = f"layers.{i}"
        _assign(layer, _layer_state(cfg, prefix, take), prefix)
        if on_layer is not None:
            on_layer(prefix, layer)
        release_freed_heap()  # the layer's parts: their freed memory fits none of the next layer's fused copies
    if on_layer is not None:
        fill_top()
    net.requires_grad_(False)
    return cfg, net.eval()


def _layer_state(cfg: ModelConfig, prefix: str, take: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    """One decoder layer's weights under the network's names (relative to the layer): q/k/v -> qkv_proj,
    gate/up -> gate_up_proj, each part read just before it is concatenated (the same bits as casting after
    concatenating: both are exact copies)."""
    attn, mlp = f"{prefix}.self_attn", f"{prefix}.mlp"
    state = {"self_attn.qkv_proj.weight": torch.cat([take(f"{attn}.{p}_proj.weight") for p in "qkv"]),
             "self_attn.o_proj.weight": take(f"{attn}.o_proj.weight"),
             "mlp.gate_up_proj.weight": torch.cat([take(f"{mlp}.gate_proj.weight"), take(f"{mlp}.up_proj.weight")]),
             "mlp.down_proj.weight": take(f"{mlp}.down_proj.weight"),
             "input_layernorm.weight": take(f"{prefix}.input_layernorm.weight"),
             "post_attention_layernorm.weight": take(f"{prefix}.post_attention_layernorm.weight")}
    if cfg.attention_bias:
        state["self_attn.qkv_proj.bias"] = torch.cat([take(f"{attn}.{p}_proj.bias") for p in "qkv"])
    if cfg.attention_out_bias:
        state["self_attn.o_proj.bias"] = take(f"{attn}.o_proj.bias")
    return state


def _fused_name(name: str) -> str:
    """A source tensor's name in the network (layers.0.self_attn.q_proj.weight -> ...qkv_proj.weight)."""
    for parts, fused in ((("q_proj", "k_proj", "v_proj"), "qkv_proj"), (("gate_proj", "up_proj"), "gate_up_proj")):
        for part in parts:
            name = name.replace(f".{part}.", f".{fused}.")
    return name


def _assign(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    """Put `state` into `module` (built on meta) as its own tensors, after checking every name and shape."""
    own = module.state_dict()
    for name, tensor in state.items():
        want = own.get(name)
        if want is None:
            raise WeightsError(f"{prefix}.{name} is not a weight of this network")
        if tensor.shape != want.shape:
            raise WeightsError(f"{prefix}.{name} has shape {tuple(tensor.shape)}, the config needs {tuple(want.shape)}")
    module.load_state_dict(state, strict=True, assign=True)


class _SkipInit(TorchFunctionMode):
    """Parameter initializers (`torch.nn.init.*`) leave their tensor as it is: a network built to be assigned
    its weights needs none. On `meta`, nn.Embedding's `normal_` runs through torch._refs, which imports
    torch._dynamo and sympy: about 64 MiB of modules the process would keep for nothing."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


def unpermute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (convert_hf_to_gguf `permute`).

    The converter does w.reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2): within each head it
    interleaves the two rotary halves. The inverse reads the rows as (n_head, rows // n_head // 2, 2, ...)
    and swaps back. Works for weights (rows, cols) and biases (rows,).
    """
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_loaders(path: Path) -> tuple[ModelConfig, dict[str, Loader]]:
    """Hugging Face names -> readers of the file's tensors (float32, q / k rows put back in HF order)."""
    gguf = GGUFFile(path)
    cfg = ModelConfig.from_gguf(gguf)
    loaders: dict[str, Loader] = {}
    for name in gguf.tensors:
        hf_name = _gguf_to_hf(name)
        if hf_name is None:
            raise UnsupportedModel(f"GGUF tensor {name} is not one this runtime knows")
        proj = hf_name.rsplit(".", 2)[-2]  # q_proj in layers.0.self_attn.q_proj.weight
        heads = {"q_proj": cfg.num_heads, "k_proj": cfg.num_kv_heads}.get(proj) if cfg.architecture == "llama" \
            else None
        loaders[hf_name] = partial(_gguf_tensor, gguf, name, heads)
    return cfg, loaders


def _gguf_tensor(gguf: GGUFFile, name: str, heads: int | None) -> torch.Tensor:
    tensor = gguf.tensor(name)  # dequantized to float32, this tensor alone
    return tensor if heads is None else unpermute_rows(tensor, heads)


def _gguf_to_hf(name: str) -> str | None:
    if name in _GGUF_NAMES:
        return _GGUF_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_LAYER_NAMES:
        return f"layers.{parts[1]}.{_GGUF_LAYER_NAMES[parts[2]]}"
    return None


def _hf_loaders(directory: Path) -> tuple[ModelConfig, dict[str, Loader]]:
    """Hugging Face names (no `model.` prefix) -> readers of the safetensors shards' tensors."""
    from safetensors import safe_open

    config_path = directory / "config.json"
    if not config_path.exists():
        raise WeightsError(f"{directory} has no config.json")
    cfg = ModelConfig.from_hf_config(json.loads(config_path.read_text()))
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted(set(weight_map.values()))
    elif (directory / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise WeightsError(f"{directory} has neither model.safetensors nor model.safetensors.index.json "
                           "(.bin checkpoints are not supported)")
    loaders: dict[str, Loader] = {}
    for file in files:
        p = directory / file
        if not p.exists():
            raise WeightsError(f"shard {p.name} is missing")
        shard = safe_open(str(p), framework="pt")  # a mapping of the file: a tensor is read when taken
        for key in shard.keys():
            if not key.endswith(_IGNORED_SUFFIXES):
                loaders[key.removeprefix("model.")] = partial(shard.get_tensor, key)
    return cfg, loaders


def read_generation_defaults(source: str | Path) -> dict[str, Any]:
    """The model's own generation defaults from generation_config.json (Hugging Face directories only).

    Returns only the keys present among do_sample, temperature, top_k, top_p, max_new_tokens,
    repetition_penalty, plus `eos_token_ids` (a list) from eos_token_id. GGUF files carry no generation
    defaults, so for them (and for directories without the file) the result is empty.
    """
    path = Path(source)
    file = path / "generation_config.json"
    if not path.is_dir() or not file.exists():
        return {}
    raw = json.loads(file.read_text())
    out: dict[str, Any] = {}
    for key, kind in (("do_sample", bool), ("temperature", float), ("top_k", int), ("top_p", float),
                      ("max_new_tokens", int), ("repetition_penalty", float)):
        if raw.get(key) is not None:
            out[key] = kind(raw[key])
    eos = raw.get("eos_token_id")
    if eos is not None:
        out["eos_token_ids"] = [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    return out

