"""The worker's entry in the worker registry (genq/store/worker_registry.py): registered when the worker is
ready, then a beat every BEAT_INTERVAL with its batch occupancy (the jobs its lease keeper holds), its
generated tokens per second and what its engines run on; marked stopped at a clean shutdown. A worker that
dies simply stops beating, and the dashboard shows it as lost."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from genq.store.db_retry import OutageLog
from genq.store.schema import utcnow
from genq.store.worker_registry import BEAT_INTERVAL, beat, finished_since, register
from workers import metrics
from workers.context import WorkerContext

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, ctx: WorkerContext, models: list[str], queues: list[str]):
        self._ctx, self._models, self._queues = ctx, models, queues
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = OutageLog(log, "worker heartbeat")

    def _info(self) -> dict[str, Any]:
        engines = self._ctx.host.describe()
        loaded = [e for e in engines.values() if e["loaded"]]
        return {
            "device": (loaded[0]["device"] if loaded else None) or self._ctx.settings.device,
            "dtype": (loaded[0]["dtype"] if loaded else None) or self._ctx.settings.dtype,
            "quantization": {m: e["quantization"] for m, e in engines.items() if m in self._models},
            "loaded": [m for m, e in engines.items() if e["loaded"]],
            "max_len": self._ctx.settings.max_len,
            "queues": self._queues,
        }

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="genq-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            beat(self._ctx.store.sessions, self._ctx.worker_id, 0, stopped=True)
        except Exception as e:  # the registry shows it as lost instead
            log.info("worker heartbeat: could not record the shutdown: %s", type(e).__name__)

    def _run(self) -> None:
        registered = False
        seen = utcnow()  # jobs finished after this are observed by the worker's metrics
        while True:
            try:
                now = utcnow()
                metrics.observe(finished_since(self._ctx.store.sessions, self._ctx.worker_id, seen, now))
                seen = now
                if not registered:
                    register(self._ctx.store.sessions, worker_id=self._ctx.worker_id, host=socket.gethostname(),
                             pid=os.getpid(), models=self._models, info=self._info(),
                             batch_limit=self._ctx.settings.batch_size if self._models else 0)
                    registered = True
                else:
                    beat(self._ctx.store.sessions, self._ctx.worker_id, len(self._ctx.keeper.held()),
                         info=self._info())
                self._outage.recovered()
            except Exception as e:  # beating goes on; a worker silent for long is shown as lost
                self._outage.failed(e)
            if self._stop.wait(BEAT_INTERVAL.total_seconds()):
                return
