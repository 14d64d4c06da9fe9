"""What a worker process holds: its settings, the job store and the engine host, made once per process."""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

from genq.config import Settings
from genq.db import make_engine, make_session_factory
from genq.jobs import JobStore
from workers.engine_host import EngineHost, engine_factory


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    host: EngineHost
    worker_id: str


_lock = threading.Lock()
_contexts: dict[int, WorkerContext] = {}


def worker_context(settings: Settings) -> WorkerContext:
    """This process's context for `settings`, built on first use (task threads share it)."""
    key = id(settings)
    ctx = _contexts.get(key)
    if ctx is None:
        with _lock:
            ctx = _contexts.get(key)
            if ctx is None:
                ctx = WorkerContext(
                    settings=settings,
                    store=JobStore(make_session_factory(make_engine(settings.database_url))),
                    host=EngineHost(settings.models, engine_factory(settings.batch_size, settings.device)),
                    worker_id=f"{socket.gethostname()}:{os.getpid()}",
                )
                _contexts[key] = ctx
    return ctx


def shutdown_contexts() -> None:
    """Stop every engine this process started (worker shutdown)."""
    with _lock:
        for ctx in _contexts.values():
            ctx.host.stop_all()
        _contexts.clear()
