"""A tiny random Llama-family GGUF with the default model's tokenizer and chat template: the real engine and
the real worker, at a fraction of the default model's load and step time, for tests where the text does not
matter. Its steps are made slow enough (16 layers) that a 2000-token job runs for seconds, not milliseconds.
"""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_MODEL = "tiny"
LONG_TOKENS = 2000  # a job this long runs for several seconds (the tiny model's context is 4096)


def write_tiny_gguf(path: Path, *, hidden: int = 64, ffn: int = 128, layers: int = 16, heads: int = 4,
                    kv_heads: int = 2, context: int = 4096, seed: int = 0) -> Path:
    """Write the model to `path`: random weights (std 0.1), the default model's vocabulary and template."""
    import gguf
    import numpy as np

    from models.builtin import smollm2_gguf_path
    from models.gguf import GGUFFile

    src = GGUFFile(smollm2_gguf_path())
    arch = src.architecture
    writer = gguf.GGUFWriter(str(path), arch)
    shape = {"context_length": context, "embedding_length": hidden, "feed_forward_length": ffn,
             "block_count": layers, "attention.head_count": heads, "attention.head_count_kv": kv_heads,
             "rope.dimension_count": hidden // heads}
    for key, value in src.metadata.items():
        if key.startswith(f"{arch}."):
            value = shape.get(key[len(arch) + 1:], value)
            if isinstance(value, int):
                writer.add_uint32(key, value)
            elif isinstance(value, float):
                writer.add_float32(key, value)
    writer.add_tokenizer_model(src.get("tokenizer.ggml.model"))
    if src.get("tokenizer.ggml.pre"):
        writer.add_tokenizer_pre(src.get("tokenizer.ggml.pre"))
    tokens = list(src.get("tokenizer.ggml.tokens"))
    writer.add_token_list(tokens)
    writer.add_token_types(list(src.get("tokenizer.ggml.token_type")))
    writer.add_token_merges(src.get("tokenizer.ggml.merges"))
    writer.add_bos_token_id(src.get("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(src.get("tokenizer.ggml.eos_token_id"))
    writer.add_chat_template(src.get("tokenizer.chat_template"))

    rng = np.random.default_rng(seed)
    head_dim = hidden // heads

    def weight(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))  # tied: no output.weight
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        block = f"blk.{i}."
        writer.add_tensor(block + "attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(block + "attn_q.weight", weight(heads * head_dim, hidden))
        writer.add_tensor(block + "attn_k.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(block + "attn_v.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(block + "attn_output.weight", weight(hidden, heads * head_dim))
        writer.add_tensor(block + "ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(block + "ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(block + "ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(block + "ffn_down.weight", weight(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's file, written once per test session."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-model") / "tiny.gguf")


def long_job(**extra: object) -> dict:
    """A job body that decodes LONG_TOKENS tokens on the tiny model unless stopped."""
    return {"model": TINY_MODEL, "prompt": "Tell a long story.",
            "params": {"max_new_tokens": LONG_TOKENS, "ignore_eos": True}, **extra}
