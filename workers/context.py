"""What a worker process holds: its settings, the job store, the engine host, the lease keeper and the
sweeper, made once per process."""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

from genq.config import Settings
from genq.db import make_engine, make_session_factory
from genq.jobs import JobStore
from celery import Celery

from genq.queue import Publisher, celery_config
from genq.sweeper import Sweeper
from workers.engine_host import EngineHost, engine_factory
from workers.lease import LeaseKeeper


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    host: EngineHost
    worker_id: str
    keeper: LeaseKeeper  # renews the leases of the jobs this process runs; stops them on cancel requests
    sweeper: Sweeper  # started by the worker_ready signal (workers/celery_app.py)


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
                store = JobStore(make_session_factory(make_engine(settings.database_url)))
                # the sweeper's own app, kept from becoming the process's current app (the worker's is)
                sweeper_app = Celery("genq-sweeper", set_as_current=False)
                sweeper_app.conf.update(celery_config(settings))
                publisher = Publisher(sweeper_app)
                ctx = WorkerContext(
                    settings=settings,
                    store=store,
                    host=EngineHost(settings.models, engine_factory(settings.batch_size, settings.device)),
                    worker_id=f"{socket.gethostname()}:{os.getpid()}",
                    keeper=LeaseKeeper(store, settings.lease_seconds),
                    sweeper=Sweeper(store, publisher, settings.sweep_interval, settings.republish_after),
                )
                _contexts[key] = ctx
    return ctx


def shutdown_contexts() -> None:
    """Stop the sweeper, the lease keeper and every engine this process started (worker shutdown)."""
    with _lock:
        for ctx in _contexts.values():
            ctx.sweeper.stop()
            ctx.keeper.stop()
            ctx.host.stop_all()
        _contexts.clear()
