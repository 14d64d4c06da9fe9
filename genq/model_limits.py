"""What a served model can take, as the API checks it at submit, from the model's files (never its weights):

- its vocabulary size and own context length, read as the engine reads them (models.config.ModelConfig);
- a prompt's token count, with its tokenizer and chat template (models.prompting, the function the engine
  encodes with), loaded once per process on first use.

Both are cached per model file for the life of the process, so every app and request in it shares them.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from genq.gguf_header import GGUFHeaderError, read_metadata

log = logging.getLogger(__name__)

# the context length the runtime assumes when a model's files do not state one (models/config.py)
DEFAULT_CONTEXT = 2048


@lru_cache(maxsize=64)
def model_shape(kind: str, source: Path) -> tuple[int | None, int | None]:
    """(vocab_size, context_length) of the model at `source` as the engine will see them; None where the
    files cannot tell (unreadable, or not a model the runtime runs: then the worker refuses it anyway)."""
    from models.config import ModelConfig, UnsupportedModel

    try:
        if kind == "gguf":
            from models.gguf import GGUFFile

            config = ModelConfig.from_gguf(GGUFFile(source))
        else:
            config = ModelConfig.from_hf_config(read_json_object(source / "config.json"))
        return config.vocab_size, config.max_position_embeddings
    except (UnsupportedModel, KeyError, TypeError, ValueError, OSError) as e:
        log.info("model %s: reading its context length only (%s: %s)", source, type(e).__name__, e)
    return None, _context_only(kind, source)


_ENCODER_LOCK = threading.Lock()


def prompt_encoder(source: Path) -> tuple[Any, Any] | None:
    """(tokenizer, chat template or None) of the model at `source`, or None (logged once) if they cannot load.
    Loaded once per process: the first requests of a busy process all miss the cache at once, and each load is
    about a second of CPU (measured: a gunicorn worker's 32 threads loading it together took it over 20 s)."""
    with _ENCODER_LOCK:
        return _load_encoder(source)


@lru_cache(maxsize=16)
def _load_encoder(source: Path) -> tuple[Any, Any] | None:
    from models.prompting import load_tokenizer

    try:
        return load_tokenizer(source)
    except Exception as e:  # a model whose tokenizer cannot load fails at the worker; the API only counts
        log.warning("cannot load the tokenizer of %s, so prompts are not counted at submit: %s: %s",
                    source, type(e).__name__, e)
        return None


def count_prompt_tokens(source: Path, job_input: Mapping[str, Any]) -> int | None:
    """The number of tokens the engine will see for `job_input` ({"prompt"} or {"messages"}), or None if the
    model's tokenizer is unavailable here. Raises models.prompting.PromptError naming the field."""
    from models.prompting import prompt_ids

    encoder = prompt_encoder(source)
    if encoder is None:
        return None
    tokenizer, template = encoder
    return len(prompt_ids(tokenizer, template, job_input.get("prompt"), job_input.get("messages")))


def _context_only(kind: str, source: Path) -> int | None:
    try:
        if kind == "gguf":
            arch = read_metadata(source, {"general.architecture"}).get("general.architecture", "llama")
            value = read_metadata(source, {f"{arch}.context_length"}).get(f"{arch}.context_length", DEFAULT_CONTEXT)
        else:
            value = read_json_object(source / "config.json").get("max_position_embeddings", DEFAULT_CONTEXT)
    except (OSError, GGUFHeaderError, ValueError) as e:
        log.warning("cannot read the context length of %s: %s", source, e)
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (a model directory's config.json, generation_config.json)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data
