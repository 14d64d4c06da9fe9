"""Build an engine from a model on disk: a .gguf file or a Hugging Face directory."""
from __future__ import annotations

from pathlib import Path

from models.engine.engine import Engine, EngineConfig
from models.engine.memory import release_freed_heap
from models.engine.threads import on_fresh_thread
from models.prompting import load_tokenizer

__all__ = ["load_engine", "load_tokenizer"]


def load_engine(source: str | Path, engine_config: EngineConfig | None = None,
                quantization: str = "none") -> Engine:
    """An engine (not started) over the model at `source`: network, tokenizer and chat template.

    `quantization` (models/quant/: "none" | "int8" | "int4" | "bnb_int8" | "nf4" | "fp4") swaps the
    projections for quantized layers at load; a mode that cannot run on the device is refused here, never
    silently dropped.
    The torch work (weights, KV cache) runs on a short-lived thread, never on the caller's: see
    models/engine/threads.py for why that matters to speed.
    """
    from models.quant import load_quantized_network

    ec = engine_config or EngineConfig()

    def build() -> Engine:
        config, network = load_quantized_network(source, quantization, dtype=ec.torch_dtype, device=ec.device)
        tokenizer, template = load_tokenizer(source)
        return Engine(network, config, tokenizer, template, ec)

    engine = on_fresh_thread(build)
    release_freed_heap()  # the load's temporaries: else the process keeps them as if they were the model
    return engine
