"""What a worker process holds: its settings, the job store and the engine host, made once per process."""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

from genq.config import Settings
from genq.db import make_engine, make_session_factory
from genq.delta_sink import DeltaSink
from genq.jobs import JobStore
from genq.queue import make_celery
from genq.webhook_deliveries import DeliveryStore
from genq.webhook_dispatch import WebhookPublisher
from genq.webhook_runner import DeliveryContext
from genq.webhook_secrets import SecretStore
from workers.engine_host import EngineHost, engine_factory


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    host: EngineHost
    worker_id: str
    events: DeltaSink  # generated text into the job event log, batched across this process's jobs
    webhooks: DeliveryContext  # what a webhook delivery task needs


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
                sessions = make_session_factory(make_engine(settings.database_url))
                publisher = WebhookPublisher(make_celery(settings, main="genq-worker-publisher"))
                ctx = WorkerContext(
                    settings=settings,
                    store=JobStore(sessions, on_deliveries=publisher.publish_many),
                    host=EngineHost(settings.models, engine_factory(
                        settings.batch_size, settings.device, settings.max_len, settings.kv_budget_mb)),
                    worker_id=f"{socket.gethostname()}:{os.getpid()}",
                    events=DeltaSink(sessions),
                    webhooks=DeliveryContext(
                        deliveries=DeliveryStore(sessions),
                        secrets=SecretStore(sessions, settings.webhook_secret_grace),
                        allow=settings.webhook_allow,
                        policy=settings.webhook_retry,
                        publisher=publisher,
                    ),
                )
                _contexts[key] = ctx
    return ctx


def shutdown_contexts() -> None:
    """Stop every engine this process started (worker shutdown)."""
    with _lock:
        for ctx in _contexts.values():
            ctx.host.stop_all()
            ctx.events.stop()
        _contexts.clear()
