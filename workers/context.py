"""What a worker process holds: its settings, the job store, the engine host, the lease keeper and the
sweeper, made once per process."""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

from celery import Celery

from genq.broker import Publisher, celery_config, make_celery
from genq.settings import Settings
from genq.store.db import make_engine, make_session_factory
from genq.store.delta_sink import DeltaSink
from genq.store.jobs import JobStore
from genq.sweeper import JobSweeper, confirm_lost_after
from genq.webhooks.delivery_runner import DeliveryContext
from genq.webhooks.dispatch import WebhookPublisher
from genq.webhooks.outbox import DeliveryStore
from genq.webhooks.secret_store import SecretStore
from workers.engine_host import EngineHost, engine_factory
from workers.lease_keeper import LeaseKeeper
from workers.shutdown import GracefulStop


@dataclass
class WorkerContext:
    settings: Settings
    store: JobStore
    host: EngineHost
    worker_id: str
    events: DeltaSink  # generated text into the job event log, batched across this process's jobs
    webhooks: DeliveryContext  # what a webhook delivery task needs
    keeper: LeaseKeeper  # renews the leases of the jobs this process runs; stops them on cancel requests
    sweeper: JobSweeper  # started by the worker_ready signal (workers/celery_app.py)
    stopping: GracefulStop  # begun by the worker_shutting_down signal (SIGTERM): hands back what outlasts the grace


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
                store = JobStore(sessions, on_deliveries=publisher.publish_many)
                # the sweeper's own app, kept from becoming the process's current app (the worker's is)
                sweeper_app = Celery("genq-sweeper", set_as_current=False)
                sweeper_app.conf.update(celery_config(settings))
                sweeper_publisher = Publisher(sweeper_app)
                keeper = LeaseKeeper(store, settings.lease_seconds)
                ctx = WorkerContext(
                    settings=settings,
                    store=store,
                    host=EngineHost(settings.models, engine_factory(
                        settings.batch_size, settings.device, settings.max_len, settings.kv_budget_mb,
                        settings.dtype, settings.kv_quantization)),
                    worker_id=f"{socket.gethostname()}:{os.getpid()}",
                    events=DeltaSink(sessions),
                    webhooks=DeliveryContext(
                        deliveries=DeliveryStore(sessions),
                        secrets=SecretStore(sessions, settings.webhook_secret_grace),
                        allow=settings.webhook_allow,
                        policy=settings.webhook_retry,
                        publisher=publisher,
                    ),
                    keeper=keeper,
                    sweeper=JobSweeper(store, sweeper_publisher, settings.sweep_interval,
                                       settings.republish_after, confirm_lost_after(settings.lease_seconds)),
                    stopping=GracefulStop(keeper, store, sweeper_publisher, settings.shutdown_grace),
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
            ctx.events.stop()
        _contexts.clear()
