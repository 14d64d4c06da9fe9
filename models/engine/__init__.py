"""The continuously batching engine.

`Engine`, `EngineConfig` and `load_engine` are imported lazily, so that the scheduler, slot manager and
other plain-Python parts can be used (and tested) without importing torch.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Engine", "EngineConfig", "RequestHandle", "load_engine"]


def __getattr__(name: str) -> Any:
    if name in ("Engine", "EngineConfig", "RequestHandle"):
        from models.engine import engine

        return getattr(engine, name)
    if name == "load_engine":
        from models.engine.loading import load_engine

        return load_engine
    raise AttributeError(f"module 'models.engine' has no attribute {name!r}")
