"""Load a Llama-family network from a GGUF file or a Hugging Face directory.

The module is built on the `meta` device (no memory, no random init) and the weights are assigned into
it with `load_state_dict(..., assign=True)`. Both sources are first mapped to Hugging Face parameter
names without the `model.` prefix (`layers.0.self_attn.q_proj.weight`, ...), then q/k/v and gate/up are
concatenated into the fused projections the network uses (models/llama.py).

Memory: each tensor is put in the compute dtype as soon as it is read (a GGUF tensor is read from the file
and dequantized to float32 by models.gguf one at a time), so the load never holds the whole model in float32 beside the
network it builds; the fused projections are concatenated in the compute dtype too (the same bits as
casting after concatenating: both are exact copies).

GGUF specifics: tensor names are llama.cpp's (`blk.N.attn_q`, ...), and for the llama architecture the
rows of q and k are put back in Hugging Face order: llama.cpp's converter permutes them for its rotary
layout (see `unpermute_rows`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
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


def load_network(source: str | Path, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> tuple[ModelConfig, LlamaNetwork]:
    """The model's config and network from a .gguf file or a Hugging Face directory, in `dtype` on `device`."""
    path = Path(source)
    if path.is_dir():
        cfg, weights = _read_hf(path, dtype)
    elif path.is_file():
        cfg, weights = _read_gguf(path, dtype)
    else:
        raise FileNotFoundError(f"no model at {path}: expected a .gguf file or a Hugging Face directory")
    state = fuse_state_dict(cfg, weights)
    with torch.device("meta"), _SkipInit():
        net = LlamaNetwork(cfg)
    expected = set(net.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise WeightsError(f"weights do not match the config: missing {sorted(missing)[:8]}, "
                           f"unexpected {sorted(unexpected)[:8]}")
    for name, tensor in net.state_dict().items():
        if state[name].shape != tensor.shape:
            raise WeightsError(f"{name} has shape {tuple(state[name].shape)}, the config needs {tuple(tensor.shape)}")
        state[name] = state[name].to(device=device, dtype=dtype)
    net.load_state_dict(state, strict=True, assign=True)
    net.requires_grad_(False)
    return cfg, net.eval()


class _SkipInit(TorchFunctionMode):
    """Parameter initializers (`torch.nn.init.*`) leave their tensor as it is: a network built to be assigned
    its weights needs none. On `meta`, nn.Embedding's `normal_` runs through torch._refs, which imports
    torch._dynamo and sympy: about 64 MiB of modules the process would keep for nothing."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


def fuse_state_dict(cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map Hugging Face names (no `model.` prefix) to the network's: q/k/v -> qkv_proj, gate/up -> gate_up_proj.

    `weights` is consumed (emptied), so each layer's parts are freed as soon as they are fused, and the load
    never holds every part beside every fused copy. The C heap is trimmed after each layer: the parts' freed
    memory fits no fused copy (each is larger than any of its parts), and kept it would add about 70 MiB to
    the default model's peak."""
    from models.engine.memory import release_freed_heap

    state = dict(weights)
    weights.clear()

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise WeightsError(f"tensor {name} is missing")
        return state.pop(name)

    for i in range(cfg.num_layers):
        attn, mlp = f"layers.{i}.self_attn", f"layers.{i}.mlp"
        state[f"{attn}.qkv_proj.weight"] = torch.cat([take(f"{attn}.{p}_proj.weight") for p in "qkv"])
        if cfg.attention_bias:
            state[f"{attn}.qkv_proj.bias"] = torch.cat([take(f"{attn}.{p}_proj.bias") for p in "qkv"])
        state[f"{mlp}.gate_up_proj.weight"] = torch.cat([take(f"{mlp}.gate_proj.weight"),
                                                         take(f"{mlp}.up_proj.weight")])
        release_freed_heap()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # some checkpoints store the tied copy too
    elif "lm_head.weight" not in state:
        raise WeightsError("lm_head.weight is missing and tie_word_embeddings is false")
    return state


def unpermute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (convert_hf_to_gguf `permute`).

    The converter does w.reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2): within each head it
    interleaves the two rotary halves. The inverse reads the rows as (n_head, rows // n_head // 2, 2, ...)
    and swaps back. Works for weights (rows, cols) and biases (rows,).
    """
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _read_gguf(path: Path, dtype: torch.dtype) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    gguf = GGUFFile(path)
    cfg = ModelConfig.from_gguf(gguf)
    weights: dict[str, torch.Tensor] = {}
    for name in gguf.tensors:
        hf_name = _gguf_to_hf(name)
        if hf_name is None:
            raise UnsupportedModel(f"GGUF tensor {name} is not one this runtime knows")
        weights[hf_name] = gguf.tensor(name).to(dtype)  # the float32 copy of one tensor at a time
    if cfg.architecture == "llama":
        for i in range(cfg.num_layers):
            for proj, heads in (("q_proj", cfg.num_heads), ("k_proj", cfg.num_kv_heads)):
                for kind in ("weight", "bias"):
                    key = f"layers.{i}.self_attn.{proj}.{kind}"
                    if key in weights:
                        weights[key] = unpermute_rows(weights[key], heads)
    return cfg, weights


def _gguf_to_hf(name: str) -> str | None:
    if name in _GGUF_NAMES:
        return _GGUF_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_LAYER_NAMES:
        return f"layers.{parts[1]}.{_GGUF_LAYER_NAMES[parts[2]]}"
    return None


def _read_hf(directory: Path, dtype: torch.dtype) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
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
    return cfg, _strip_prefix(_read_safetensors((directory / f for f in files), dtype))


def _read_safetensors(paths: Iterable[Path], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for p in paths:
        if not p.exists():
            raise WeightsError(f"shard {p.name} is missing")
        weights.update((k, v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(p).items())
    return weights


def _strip_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in weights.items():
        if name.endswith(_IGNORED_SUFFIXES):
            continue
        out[name.removeprefix("model.")] = tensor
    return out


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

