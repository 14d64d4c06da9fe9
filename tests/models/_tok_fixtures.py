"""Shared loaders and sample texts for the tokenizer, detokenizer and chat template tests.

Loaders are cached for the whole test session: the transformers reference takes seconds to load a
GGUF tokenizer (it parses the whole file's metadata with the gguf package), ours well under one.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from models.builtin import smollm2_gguf_path
from models.gguf import GGUFFile
from models.tokenizer import Tokenizer

SAMPLES: dict[str, str] = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; isn't it? \"Yes,\" she said.",
    "japanese": "日本語のテキストを正しく分割できますか？東京は今日、晴れです。",
    "chinese": "我们今天去公园散步，天气非常好！你觉得呢？",
    "emoji": "Party 🎉🎉 time 👍🏽 family 👨‍👩‍👧‍👦 and flag 🏳️‍🌈 end",
    "code": "def f(x):\n\tif x:\n\t\treturn [i ** 2 for i in range(x)]\n    # four spaces\n\treturn None\n",
    "whitespace": "a    b\n\n\n c\r\nd\t\te   \n  \t end          \r\n\r\n",
    "digits": "3.14159 and 1234567890 or 007, 1e-9, 2024-06-01",
    "accents": "café naïve Ærøskøbing — “quoted” ‘text’ …",
    "special": "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "empty": "",
}


@lru_cache(maxsize=1)
def gguf_file() -> GGUFFile:
    return GGUFFile(smollm2_gguf_path())


@lru_cache(maxsize=1)
def our_tokenizer() -> Tokenizer:
    return Tokenizer.from_gguf(gguf_file())


@lru_cache(maxsize=1)
def reference_tokenizer() -> Any:
    """transformers' tokenizer for the same GGUF: the reference ours must agree with."""
    from transformers import AutoTokenizer

    path = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def write_gguf_variant(path: Path, *, model: str = "gpt2", pre: str | None = "llama-bpe",
                       add_bos: bool | None = True, extra_tokens: tuple[tuple[str, int], ...] = ()) -> Path:
    """A GGUF holding the default model's vocabulary with other tokenizer settings and no weights
    worth the name (one tiny tensor), for the settings the default model does not exercise."""
    import gguf
    import numpy as np

    src = gguf_file()
    writer = gguf.GGUFWriter(str(path), src.architecture)
    for key, value in src.metadata.items():
        # the hyperparameters, so that transformers can read a config from the file
        if key.startswith(f"{src.architecture}."):
            if isinstance(value, int):
                writer.add_uint32(key, value)
            elif isinstance(value, float):
                writer.add_float32(key, value)
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(list(src.get("tokenizer.ggml.tokens")) + [t for t, _ in extra_tokens])
    writer.add_token_types(list(src.get("tokenizer.ggml.token_type")) + [ty for _, ty in extra_tokens])
    writer.add_token_merges(src.get("tokenizer.ggml.merges"))
    writer.add_bos_token_id(src.get("tokenizer.ggml.bos_token_id"))
    writer.add_eos_token_id(src.get("tokenizer.ggml.eos_token_id"))
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    writer.add_chat_template(src.get("tokenizer.chat_template"))
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
