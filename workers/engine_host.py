"""The per-process engine host: one engine per model, loaded once on first use, shared by all task threads.

A worker runs a thread pool as wide as the engine's batch; every task thread submits to the same engine,
whose single loop decodes them together. Loading is lazy (a worker serving several models pays only for
those it is asked to run) and guarded by a lock per model, so concurrent first jobs load it once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from genq.settings import ModelSpec

log = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """This worker cannot run the model (not served here, or it failed to load); stored as the job's error."""

    code = "model_unavailable"


EngineFactory = Callable[[ModelSpec], Any]  # returns an engine object (models.engine.Engine), not yet started


class EngineHost:
    def __init__(self, models: Mapping[str, ModelSpec], factory: EngineFactory):
        self._models = dict(models)
        self._factory = factory
        self._engines: dict[str, Any] = {}
        self._locks = {name: threading.Lock() for name in self._models}
        self._closed = False

    def get(self, name: str) -> Any:
        """The started engine for model `name`, loading it on first use (raises ModelUnavailable)."""
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        if name not in self._models:
            raise ModelUnavailable(f"model {name!r} is not served by this worker")
        with self._locks[name]:
            engine = self._engines.get(name)
            if engine is None:
                if self._closed:
                    raise ModelUnavailable("the worker is shutting down")
                engine = self._load(self._models[name])
                self._engines[name] = engine
        return engine

    def loaded(self) -> list[str]:
        return sorted(self._engines)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each loaded model's device and dtype, and each served model's quantization (the worker registry)."""
        out: dict[str, dict[str, Any]] = {}
        for name, spec in self._models.items():
            ec = getattr(self._engines.get(name), "engine_config", None)
            out[name] = {"quantization": spec.quantization or "none", "loaded": name in self._engines,
                         "device": str(getattr(ec, "device", "")) or None,
                         "dtype": str(getattr(ec, "dtype", "")) or None}
        return out

    def stop_all(self) -> None:
        """Stop every loaded engine (worker shutdown); later get() calls fail."""
        self._closed = True
        for name, engine in list(self._engines.items()):
            try:
                engine.stop()
            except Exception:  # one engine failing to stop must not keep the others running
                log.exception("stopping the engine for %s failed", name)
        self._engines.clear()

    def _load(self, spec: ModelSpec) -> Any:
        started = time.perf_counter()
        log.info("loading model %s from %s", spec.name, spec.source)
        try:
            engine = self._factory(spec)
            engine.start()
        except Exception as e:
            log.exception("loading model %s failed", spec.name)
            raise ModelUnavailable(f"model {spec.name!r} failed to load: {type(e).__name__}: {e}") from e
        ec = getattr(engine, "engine_config", None)
        log.info("model %s ready in %.1fs (%s, %s)", spec.name, time.perf_counter() - started,
                 getattr(ec, "device", "?"), getattr(ec, "dtype", "?"))
        return engine


def engine_factory(batch_size: int, device: str | None, max_len: int | None = None,
                   kv_budget_mb: int | None = None, dtype: str = "auto",
                   kv_quantization: str = "auto") -> EngineFactory:
    """Builds engines with the project's runtime (imports torch only when a model is first needed)."""

    def build(spec: ModelSpec) -> Any:
        from models.engine import EngineConfig, load_engine
        from models.quant import compute_dtype_name

        budget = None if kv_budget_mb is None else kv_budget_mb << 20  # None: sized from the machine at load
        mode = spec.quantization or "none"
        config = EngineConfig(max_batch=batch_size, max_len=max_len, kv_budget_bytes=budget,
                              kv_quantization=kv_quantization,
                              dtype=compute_dtype_name(mode, dtype, device or "cpu"),
                              **({"device": device} if device else {}))
        return load_engine(str(spec.source), config, quantization=mode)

    return build
