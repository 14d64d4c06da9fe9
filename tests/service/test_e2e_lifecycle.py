"""End to end, on the production shape: real HTTP, PostgreSQL, Redis and `genq worker` processes (serving a
tiny random model, so that jobs take seconds and workers start fast), and once on the embedded shape
(SQLite and the file-system broker). Cancel, deadlines, Prefer: wait, TTL expiry, broker priority, a worker
killed mid-job, and a Redis flush.

Each service gets a fresh database and its own broker key prefix: a worker's sweeper acts on every job in
its database, so services must not share one.
"""
from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from e2e_helpers import REDIS_URL, ApiThread, Child, read_sse, wait_for_job, wait_until
from sqlalchemy import func, select
from tiny_model import LONG_TOKENS, TINY_MODEL, long_job, tiny_gguf  # noqa: F401  (fixture)

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store import migrate
from genq.store.schema import JobEvent

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 120
UNSERVED = "tiny-unserved"  # configured (the API accepts its jobs) but served by no worker
# a Redis database this module may flush whole (GENQ_TEST_REDIS_FLUSH_URL); the others use key prefixes only
FLUSH_URL = os.environ.get("GENQ_TEST_REDIS_FLUSH_URL", REDIS_URL.rsplit("/", 1)[0] + "/11")


class Service:
    """A fresh database, an API thread, and `genq worker` processes started on demand, on one broker."""

    def __init__(self, database_url: str, broker_url: str, model: Path, tmp: Path, **env: str):
        self.prefix = f"genq-test-{secrets.token_hex(4)}:"
        self.env = {
            "DATABASE_URL": database_url,
            "GENQ_BROKER_URL": broker_url,
            "GENQ_BROKER_KEY_PREFIX": self.prefix if broker_url.startswith("redis") else "",
            "GENQ_MODELS": f"{TINY_MODEL}={model},{UNSERVED}={model}",
            "GENQ_BATCH_SIZE": "4",
            "GENQ_LEASE_SECONDS": "2",
            "GENQ_SWEEP_INTERVAL": "1",
            "GENQ_REPUBLISH_AFTER": "2",
            "GENQ_JOB_TIMEOUT": "120",
            "GENQ_BROKER_VISIBILITY_TIMEOUT": "300",
            **env,
        }
        migrate.upgrade(database_url)
        self.settings = Settings.from_env(self.env)
        self.app = create_app(self.settings)
        self.api = ApiThread(self.app)
        self.url = self.api.url
        self.tmp = tmp
        self.workers: list[Child] = []

    def start_worker(self, **env: str) -> Child:
        # models only: its thread pool is then exactly GENQ_BATCH_SIZE wide, which the tests below count on
        # (a worker that also serves webhooks has their threads too, and they take model jobs as well)
        child = Child(["worker", "--models", TINY_MODEL, "--queues", "models"], {**self.env, **env}, cwd=self.tmp)
        self.workers.append(child)
        child.wait_for_line("ready in", START_TIMEOUT_S)  # the preloaded model is ready
        return child

    def post(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(f"{self.url}/v1/jobs", json=body, headers=headers or {}, timeout=90)

    def job(self, job_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json()

    def wait_running(self, job_id: str) -> dict[str, Any]:
        return wait_until(lambda: (j := self.job(job_id))["status"] == "running" and j, JOB_TIMEOUT_S,
                          f"job {job_id} did not start", interval=0.05)

    def stop(self) -> None:
        for child in self.workers:
            child.stop()
        self.api.stop()
        self.app.extensions[EXTENSION_KEY].db.dispose()


@pytest.fixture
def make_service(postgres_database: Callable[[], str], tiny_gguf: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(broker_url: str = REDIS_URL, database_url: str | None = None, **env: str) -> Service:
        service = Service(database_url or postgres_database(), broker_url, tiny_gguf,
                          tmp_path_factory.mktemp("service"), **env)
        made.append(service)
        return service

    yield make
    for service in made:
        service.stop()


@pytest.fixture(scope="module")
def service(postgres_database: Callable[[], str], tiny_gguf: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service with one worker, for the tests that need no worker of their own."""
    svc = Service(postgres_database(), REDIS_URL, tiny_gguf, tmp_path_factory.mktemp("service"))
    try:
        svc.start_worker()
        yield svc
    finally:
        svc.stop()


def _cancel(service: Service, job_id: str) -> requests.Response:
    return requests.post(f"{service.url}/v1/jobs/{job_id}/cancel", timeout=10)


def test_canceling_a_running_job_stops_it_within_moments_keeping_its_text(service: Service) -> None:
    job_id = service.post(long_job()).json()["id"]
    service.wait_running(job_id)
    time.sleep(0.5)
    asked = time.monotonic()
    response = _cancel(service, job_id)
    assert response.status_code == 202 and response.json()["cancel_requested_at"]
    job = wait_for_job(service.url, job_id, JOB_TIMEOUT_S)
    assert time.monotonic() - asked < 3
    assert job["status"] == "canceled" and job["output"]["finish_reason"] == "canceled"
    assert job["output"]["text"] and 0 < job["output"]["usage"]["completion_tokens"] < LONG_TOKENS
    assert _cancel(service, job_id).status_code == 200  # idempotent


def test_canceling_a_queued_job_means_its_worker_does_nothing_with_it(service: Service) -> None:
    running = [service.post(long_job()).json()["id"] for _ in range(4)]  # the worker's 4 threads are busy
    for job_id in running:
        service.wait_running(job_id)
    queued = service.post({"model": TINY_MODEL, "prompt": "hi", "params": {"max_new_tokens": 4}}).json()["id"]
    response = _cancel(service, queued)
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    for job_id in running:
        _cancel(service, job_id)
    service.workers[0].wait_for_line(f"job {queued} is not queued; skipping", JOB_TIMEOUT_S)
    assert service.job(queued)["attempts"] == 0 and service.job(queued)["started_at"] is None
    assert [wait_for_job(service.url, j, JOB_TIMEOUT_S)["status"] for j in running] == ["canceled"] * 4


def test_a_job_past_its_deadline_fails_deadline_exceeded_keeping_its_text(service: Service) -> None:
    job_id = service.post(long_job(deadline_seconds=1)).json()["id"]
    job = wait_for_job(service.url, job_id, JOB_TIMEOUT_S)
    assert job["status"] == "failed" and job["error"]["code"] == "deadline_exceeded"
    assert job["output"]["text"] and 0 < job["output"]["usage"]["completion_tokens"] < LONG_TOKENS


def test_prefer_wait_returns_the_finished_job(service: Service) -> None:
    response = service.post({"model": TINY_MODEL, "prompt": "hi", "params": {"max_new_tokens": 8}},
                            {"Prefer": "wait=30"})
    assert response.status_code == 200 and response.headers["Preference-Applied"] == "wait=30"
    assert response.json()["status"] == "succeeded" and response.json()["output"]["usage"]["completion_tokens"] == 8


def test_a_job_no_worker_starts_within_its_ttl_is_expired_by_the_sweeper(service: Service) -> None:
    job_id = service.post({"model": UNSERVED, "prompt": "hi", "ttl_seconds": 1}).json()["id"]
    job = wait_for_job(service.url, job_id, 30)
    assert job["status"] == "expired" and job["started_at"] is None and job["attempts"] == 0


def test_higher_priority_jobs_are_delivered_first(make_service: Callable[..., Service]) -> None:
    svc = make_service(GENQ_REPUBLISH_AFTER="600")
    short = {"model": TINY_MODEL, "prompt": "hi", "params": {"max_new_tokens": 4}}
    low = [svc.post(short).json()["id"] for _ in range(3)]
    high = svc.post({**short, "priority": 9}).json()["id"]
    assert svc.job(high)["queue_position"] == 0 and svc.job(low[2])["queue_position"] == 3
    svc.start_worker(GENQ_BATCH_SIZE="1")  # one task thread: jobs start one at a time, in delivery order
    jobs = [wait_for_job(svc.url, j, JOB_TIMEOUT_S) for j in [high, *low]]
    assert [j["status"] for j in jobs] == ["succeeded"] * 4
    assert sorted(jobs, key=lambda j: j["started_at"]) == jobs


def test_a_job_whose_worker_is_killed_mid_run_completes_once_on_another(make_service: Callable[..., Service]) -> None:
    svc = make_service()
    first = svc.start_worker()
    job_id = svc.post(long_job(params={"max_new_tokens": 300, "ignore_eos": True})).json()["id"]  # seconds long
    assert svc.wait_running(job_id)["attempts"] == 1
    wait_until(lambda: _deltas(svc, job_id), JOB_TIMEOUT_S, "no text of the first attempt", interval=0.05)
    os.killpg(first.proc.pid, signal.SIGKILL)  # no shutdown: its lease simply stops being renewed
    first.stop()
    assert svc.job(job_id)["status"] == "running"
    second = svc.start_worker()
    job = wait_for_job(svc.url, job_id, JOB_TIMEOUT_S)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["output"]["usage"]["completion_tokens"] == 300
    finished = [line for w in (first, second) for line in w.lines if f"job {job_id}: succeeded" in line]
    assert len(finished) == 1 and "(attempt 2)" in finished[0], finished
    # its event stream says the text restarted; the deltas after the restart are exactly the output
    with requests.get(f"{svc.url}/v1/jobs/{job_id}/events", stream=True, timeout=30) as response:
        events = [f for f in read_sse(response) if "event" in f]
    restart = next(i for i, e in enumerate(events) if e["event"] == "restart")
    assert any(e["event"] == "delta" for e in events[:restart])  # the first attempt's text, now void
    assert events[restart]["data"]["attempt"] == 2 and [e["event"] for e in events].count("restart") == 1
    assert "".join(e["data"]["text"] for e in events[restart:] if e["event"] == "delta") == job["output"]["text"]
    assert [int(e["id"]) for e in events[:-1]] == list(range(1, len(events)))


def _deltas(service: Service, job_id: str) -> int:
    """How many text events the job's log holds."""
    with service.app.extensions[EXTENSION_KEY].sessions() as session:
        return session.scalar(select(func.count()).select_from(JobEvent)
                              .where(JobEvent.job_id == job_id, JobEvent.kind == "delta")) or 0


def test_jobs_whose_messages_a_redis_flush_lost_are_republished_and_complete(
    make_service: Callable[..., Service]
) -> None:
    svc = make_service(broker_url=FLUSH_URL)
    ids = [svc.post({"model": TINY_MODEL, "prompt": f"count to {n}", "params": {"max_new_tokens": 4}}).json()["id"]
           for n in range(5)]
    client = redis.Redis.from_url(FLUSH_URL)
    assert list(client.scan_iter(match=f"{svc.prefix}*")), "the messages were not in Redis"
    client.flushdb()
    assert not list(client.scan_iter(match=f"{svc.prefix}*"))
    svc.start_worker()
    jobs = [wait_for_job(svc.url, j, JOB_TIMEOUT_S) for j in ids]
    assert [(j["status"], j["attempts"]) for j in jobs] == [("succeeded", 1)] * len(ids)


def test_cancel_reaches_a_running_job_on_the_embedded_shape(make_service: Callable[..., Service],
                                                            tmp_path: Path) -> None:
    svc = make_service(broker_url=f"filesystem://{tmp_path / 'broker'}",
                       database_url=f"sqlite:///{tmp_path / 'genq.db'}")
    svc.start_worker()
    job_id = svc.post(long_job()).json()["id"]
    svc.wait_running(job_id)
    time.sleep(0.5)
    assert _cancel(svc, job_id).status_code == 202
    job = wait_for_job(svc.url, job_id, JOB_TIMEOUT_S)
    assert job["status"] == "canceled" and 0 < job["output"]["usage"]["completion_tokens"] < LONG_TOKENS


