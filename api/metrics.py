"""GET /metrics: Prometheus text format.

What is global is read from the database at each scrape, so every API process answers the same (jobs by
status and model from `job_counts`, each queue's depth, oldest waiting job's age and paused state, webhook
deliveries by status, workers up and lost). What is per process, the HTTP requests this API process served,
is kept by prometheus_client; with `PROMETHEUS_MULTIPROC_DIR` set (several processes, e.g. under gunicorn:
an empty directory, cleared at each start) every process writes its values there and any one of them sums
them all. Per-worker values (queue wait and run time histograms, tokens, engine steps, batch occupancy) are
on each worker's own endpoint (workers/metrics.py, GENQ_WORKER_METRICS_PORT).
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from api.services import services
from genq.store import admin_lists, queues
from genq.store.job_counts import counts_by_model
from genq.store.schema import utcnow
from genq.store.worker_registry import list_workers

bp = Blueprint("metrics", __name__)
disable_created_metrics()  # no `_created` series beside every counter: half the lines, nothing a dashboard reads

HTTP_REQUESTS = Counter("genq_http_requests_total", "HTTP requests answered by the API, by route and status",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("genq_http_request_duration_seconds", "time to answer an HTTP request, by route",
                         ["method", "route"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))


class DatabaseCollector(Collector):
    """The service's global state, read from the database at each scrape (bounded queries, no count of jobs)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        svc = services()
        now = utcnow()
        by_model = counts_by_model(svc.sessions)
        jobs = GaugeMetricFamily("genq_jobs", "jobs by model and status (kept in step by the state machine)",
                                 labels=["model", "status"])
        for model, counts in sorted(by_model.items()):
            for status, n in counts.items():
                jobs.add_metric([model, status], n)
        yield jobs
        paused = queues.paused_models(svc.sessions)
        models = sorted({m.name for m in svc.catalog.all()} | set(paused) | set(by_model))
        queued = [m for m in models if by_model.get(m, {}).get("queued")]
        oldest = queues.oldest_queued(svc.sessions, queued)
        depth = GaugeMetricFamily("genq_queue_depth", "queued jobs waiting for a worker", labels=["model"])
        age = GaugeMetricFamily("genq_queue_oldest_age_seconds", "age of the oldest queued job (0 when none)",
                                labels=["model"])
        is_paused = GaugeMetricFamily("genq_queue_paused", "1 while an operator has paused the queue",
                                      labels=["model"])
        for m in models:
            depth.add_metric([m], by_model.get(m, {}).get("queued", 0))
            age.add_metric([m], (now - oldest[m]).total_seconds() if m in oldest else 0.0)
            is_paused.add_metric([m], 1 if m in paused else 0)
        yield depth
        yield age
        yield is_paused
        deliveries = GaugeMetricFamily("genq_webhook_deliveries", "webhook deliveries by status", labels=["status"])
        found = admin_lists.deliveries_by_status(svc.sessions)
        for status in ("pending", "succeeded", "failed", "gone"):
            deliveries.add_metric([status], found.get(status, 0))
        yield deliveries
        workers = GaugeMetricFamily("genq_workers", "worker processes by state (from their heartbeats)",
                                    labels=["state"])
        states = [w.state for w in list_workers(svc.sessions, now)]
        for state in ("up", "lost", "stopped"):
            workers.add_metric([state], states.count(state))
        yield workers


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every API process's HTTP counters, summed
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    return Response(text + generate_latest(_database_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _database_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return registry


def instrument(app: Flask) -> None:
    """Count and time every request by its route (the URL rule, so ids do not make new series)."""

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            HTTP_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response
