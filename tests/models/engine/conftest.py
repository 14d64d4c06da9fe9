"""Fixtures for the engine tests; the toy network, tokenizer and template live in engine_toys.py."""
from __future__ import annotations

from typing import Any

import pytest
from engine_toys import ToyConfig, ToyDetokenizer, ToyNetwork, ToyTemplate, ToyTokenizer


@pytest.fixture
def toy_engine_factory():
    """make(network=None, config=None, **engine_config) -> a started Engine over `network` (the toy network by
    default) with the toy tokenizer and template; stopped at the end of the test."""
    from models.engine import Engine, EngineConfig

    engines = []

    def make(network: Any = None, config: Any = None, **kw) -> Engine:
        config = config or ToyConfig()
        kw.setdefault("max_len", 256)
        engine = Engine(network or ToyNetwork(config), config, ToyTokenizer(), ToyTemplate(), EngineConfig(**kw),
                        detokenizer_factory=ToyDetokenizer)
        engines.append(engine)
        return engine.start()

    yield make
    for e in engines:
        e.stop()
