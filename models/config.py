"""The network's shape and numerics, read from a Hugging Face config.json or GGUF metadata.

Only what the Llama-family network (models/llama.py) can run faithfully is accepted: Llama 1/2/3 (rope
scaling default / linear / dynamic / llama3), Mistral (sliding window included), Qwen2 (q/k/v biases) and
the models that reuse those architectures (SmolLM). Anything else is refused at load time with
`UnsupportedModel`, naming what is unsupported, rather than run with silently wrong numerics.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.gguf import GGUFFile


class UnsupportedModel(ValueError):
    """The model's architecture or one of its settings is not one this runtime implements."""


# Hugging Face `architectures` / `model_type` values we run, mapped to our architecture name.
HF_ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
}
HF_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2"}
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2"}
ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    """Everything the network needs to be built; `rope_scaling` is None or a dict with `rope_type` and its keys."""

    architecture: str  # "llama" | "mistral" | "qwen2"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q, k and v (Qwen2; Llama with attention_bias)
    attention_out_bias: bool = False  # bias on the output projection (Llama with attention_bias only)
    sliding_window: int | None = None  # a key is seen only if query_pos - key_pos < sliding_window (Mistral)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.architecture not in HF_MODEL_TYPES.values():
            raise UnsupportedModel(f"architecture {self.architecture!r} is not supported (llama, mistral, qwen2 are)")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise UnsupportedModel(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise UnsupportedModel(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise UnsupportedModel(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        _check_rope_scaling(self.rope_scaling)
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise UnsupportedModel(f"sliding_window must be positive, got {self.sliding_window}")

    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else str(self.rope_scaling["rope_type"])

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        """Read a Hugging Face config.json (transformers 4.x `rope_scaling` or 5.x `rope_parameters` layout)."""
        architecture = _hf_architecture(cfg)
        act = cfg.get("hidden_act", cfg.get("hidden_activation", "silu"))
        if act != "silu":
            raise UnsupportedModel(f"activation {act!r} is not supported (only silu, as in SwiGLU)")
        if cfg.get("mlp_bias"):
            raise UnsupportedModel("mlp_bias=true is not supported")
        if cfg.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedModel("partial rotary embeddings (partial_rotary_factor != 1) are not supported")
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        head_dim = cfg.get("head_dim") or hidden // heads
        rope_theta, rope_scaling = _hf_rope(cfg)

        sliding_window = None
        if architecture == "mistral":
            sliding_window = cfg.get("sliding_window")
        elif architecture == "qwen2" and cfg.get("use_sliding_window"):
            # Qwen2 applies the window only to layers >= max_window_layers; we do not implement per-layer windows
            raise UnsupportedModel("Qwen2 with use_sliding_window=true is not supported")
        if architecture == "qwen2":
            qkv_bias, out_bias = True, False
        else:
            qkv_bias = out_bias = bool(cfg.get("attention_bias", False))

        eos = cfg.get("eos_token_id")
        return cls(
            architecture=architecture,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=qkv_bias,
            attention_out_bias=out_bias,
            sliding_window=int(sliding_window) if sliding_window is not None else None,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=_ids(eos),
        )

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelConfig:
        """Read the `{arch}.*` metadata of a GGUF file (llama.cpp's names)."""
        arch = gguf.architecture
        if arch not in GGUF_ARCHITECTURES:
            raise UnsupportedModel(
                f"GGUF architecture {arch!r} is not supported (supported: {', '.join(GGUF_ARCHITECTURES)})")

        def meta(key: str, default: Any = None) -> Any:
            return gguf.get(f"{arch}.{key}", default)

        for required in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count"):
            if meta(required) is None:
                raise UnsupportedModel(f"GGUF metadata {arch}.{required} is missing")
        hidden, heads = int(meta("embedding_length")), int(meta("attention.head_count"))
        head_dim = int(meta("attention.key_length") or hidden // heads)
        if int(meta("attention.value_length") or head_dim) != head_dim:
            raise UnsupportedModel("GGUF models with value_length != key_length are not supported")
        rope_dim = meta("rope.dimension_count")
        if rope_dim is not None and int(rope_dim) != head_dim:
            raise UnsupportedModel(f"partial rotary embeddings (rope.dimension_count {rope_dim} < head_dim "
                                   f"{head_dim}) are not supported")
        if "rope_freqs.weight" in gguf.tensors:
            raise UnsupportedModel("GGUF rope_freqs (per-frequency rope factors, e.g. Llama 3.1) are not supported")
        context = int(meta("context_length", 2048))
        rope_scaling = _gguf_rope_scaling(meta, context)
        vocab = meta("vocab_size") or len(gguf.get("tokenizer.ggml.tokens", []))
        if not vocab:
            vocab = gguf.tensors["token_embd.weight"].shape[0]
        window = meta("attention.sliding_window")
        eos = gguf.get("tokenizer.ggml.eos_token_id")
        return cls(
            architecture=GGUF_ARCHITECTURES[arch],
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(meta("feed_forward_length")),
            num_layers=int(meta("block_count")),
            num_heads=heads,
            num_kv_heads=int(meta("attention.head_count_kv") or heads),
            head_dim=head_dim,
            rms_norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(meta("rope.freq_base", 10000.0)),
            rope_scaling=rope_scaling,
            max_position_embeddings=context,
            tie_word_embeddings="output.weight" not in gguf.tensors,
            attention_bias="blk.0.attn_q.bias" in gguf.tensors,
            attention_out_bias="blk.0.attn_output.bias" in gguf.tensors,
            sliding_window=int(window) if window else None,
            bos_token_id=gguf.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=_ids(eos),
        )


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _hf_architecture(cfg: Mapping[str, Any]) -> str:
    archs = cfg.get("architectures") or []
    for name in archs:
        if name in HF_ARCHITECTURES:
            return HF_ARCHITECTURES[name]
    model_type = cfg.get("model_type")
    if not archs and model_type in HF_MODEL_TYPES:
        return HF_MODEL_TYPES[model_type]
    named = ", ".join(archs) if archs else f"model_type {model_type!r}"
    raise UnsupportedModel(
        f"architecture {named} is not supported (supported: {', '.join(HF_ARCHITECTURES)})")


def _hf_rope(cfg: Mapping[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling or None) from either layout: 4.x `rope_theta` + `rope_scaling`,
    5.x `rope_parameters`."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type == "default" and not params.get("factor"):
        return theta, None
    scaling = {"rope_type": rope_type, **params}
    if rope_type == "llama3":
        scaling.setdefault("original_max_position_embeddings", cfg.get("max_position_embeddings"))
    return theta, scaling


def _gguf_rope_scaling(meta: Any, context: int) -> dict[str, Any] | None:
    kind = meta("rope.scaling.type")
    factor = meta("rope.scaling.factor")
    if kind in (None, "none") or (kind == "linear" and factor in (None, 1.0)):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    raise UnsupportedModel(f"GGUF rope scaling type {kind!r} is not supported (none and linear are)")


def _check_rope_scaling(scaling: Mapping[str, Any] | None) -> None:
    if scaling is None:
        return
    rope_type = scaling.get("rope_type")
    if rope_type not in ROPE_TYPES:
        raise UnsupportedModel(f"rope scaling type {rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    if rope_type == "default":
        return
    factor = scaling.get("factor")
    if not isinstance(factor, (int, float)) or factor <= 0:
        raise UnsupportedModel(f"rope scaling {rope_type!r} needs a positive factor, got {factor!r}")
    if rope_type == "llama3":
        for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if not isinstance(scaling.get(key), (int, float)):
                raise UnsupportedModel(f"llama3 rope scaling needs {key}")
        if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
            raise UnsupportedModel("llama3 rope scaling needs high_freq_factor > low_freq_factor")
