"""The worker's Celery app: `celery -A workers.celery_app worker --pool threads -Q genq.model.<name>` works,
and `genq worker` runs the same app with the right queues and pool.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from genq.broker import make_celery
from genq.readiness import write_readiness
from genq.settings import Settings
from workers import job_tasks, webhook_tasks
from workers.context import shutdown_contexts, worker_context

log = logging.getLogger(__name__)


def create_celery(settings: Settings, preload: Iterable[str] = ()) -> Celery:
    """The worker app for `settings`; models named in `preload` start loading as soon as the worker is ready.

    Set `genq_sweep = True` on it (genq worker does, when it consumes the webhook queue) to run the webhook
    sweep in this process.
    """
    app = make_celery(settings, main="genq-worker")
    app.genq_settings = settings
    app.genq_preload = list(preload)
    app.genq_ready_file = None
    app.genq_sweep = False
    app.genq_models = None  # the models this worker serves, as genq worker sets them (None: every configured one)
    job_tasks.register(app)
    webhook_tasks.register(app)
    return app


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    settings = getattr(app, "genq_settings", None)
    if settings is not None:
        worker_context(settings).sweeper.start()


@worker_ready.connect
def _preload_models(sender: Any = None, **_: Any) -> None:
    """Load the models to preload on a thread of their own, then write the ready file if there is one
    (`genq worker --ready-file`, which `genq up` waits for): at once when there is nothing to load, and at
    the first model that fails to load."""
    app = getattr(sender, "app", None)
    names = getattr(app, "genq_preload", [])
    ready_file = getattr(app, "genq_ready_file", None)
    if app is None or not names:
        if ready_file:
            write_readiness(ready_file, [])
        return
    host = worker_context(app.genq_settings).host

    def load() -> None:
        for name in names:
            try:
                host.get(name)
            except Exception as e:  # the first job for it reports the failure on the job
                log.exception("preloading %s failed", name)
                if ready_file:
                    write_readiness(ready_file, host.loaded(), f"{type(e).__name__}: {e}")
                return
        if ready_file:
            write_readiness(ready_file, host.loaded())

    threading.Thread(target=load, name="genq-preload", daemon=True).start()


_sweepers: list[Any] = []
_heartbeats: list[Any] = []


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """Register in the worker registry and beat (workers/heartbeat.py)."""
    app = getattr(sender, "app", None)
    settings = getattr(app, "genq_settings", None)
    if settings is None:
        return
    from genq.broker import queue_name
    from workers.heartbeat import Heartbeat

    served = getattr(app, "genq_models", None)
    models = sorted(settings.models) if served is None else list(served)
    queues = [queue_name(m) for m in models] + (["genq.webhooks"] if getattr(app, "genq_sweep", False) else [])
    ctx = worker_context(settings)
    _heartbeats.append(Heartbeat(ctx, models, queues).start())
    if settings.worker_metrics_port is not None:
        from workers import metrics

        metrics.serve(settings.worker_metrics_port, ctx.host, settings.host)


@worker_ready.connect
def _start_webhook_sweep(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if getattr(app, "genq_sweep", False):
        _sweepers.append(webhook_tasks.start_sweeper(app))


@worker_shutting_down.connect
def _hand_back_after_grace(**_: Any) -> None:
    """SIGTERM (a warm shutdown): running jobs get GENQ_SHUTDOWN_GRACE seconds, then go back to the queue
    (workers/shutdown.py). Runs in the signal handler: it only starts a thread."""
    worker_context(app.genq_settings).stopping.begin()


@worker_shutdown.connect
def _stop_engines(**_: Any) -> None:
    while _sweepers:
        _sweepers.pop().stop()
    while _heartbeats:
        _heartbeats.pop().stop()
    shutdown_contexts()


app = create_celery(Settings.from_env())
