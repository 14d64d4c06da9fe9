"""End to end through a database outage: real HTTP, a private PostgreSQL server this test stops and starts,
the file-system broker and a `genq worker` process serving the tiny model.

Jobs with `max_attempts: 1` are running when PostgreSQL stops; their generation finishes while it is down;
it stays down for DOWN_S seconds. Every job must still end `succeeded` with the text it generated, on its
first attempt, its text events and its webhook intact (none stuck); all through the outage the API answers
503 with Retry-After, never a 500.
Leases (2 s) and the sweeper (every second) are short, and queued jobs are re-published every couple of
seconds, so lapsed leases and duplicate messages are all there when the database comes back.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from e2e_helpers import ApiThread, Child, read_sse, wait_for_job, wait_until
from private_postgres import PrivatePostgres, private_postgres  # noqa: F401  (fixture)
from sqlalchemy import select
from tiny_model import TINY_MODEL, tiny_gguf  # noqa: F401  (fixture)
from webhooks.receiver import Receiver

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store import migrate
from genq.store.schema import WebhookDelivery

pytestmark = pytest.mark.slow

JOBS = 12
BATCH = 4
TOKENS = 40  # a batch of these takes a second or two on the tiny model: they finish while the database is down
DOWN_S = 30.0
MAX_DOWN_S = 120.0
START_TIMEOUT_S = 180
FINISH_TIMEOUT_S = 180


def _held(worker: Child) -> list[str]:
    """The worker's log lines of results finished but waiting for the database."""
    return [line for line in worker.lines if "storing its outcome: the database is unavailable" in line]


def _errors_are_503_with_retry_after(url: str, job_id: str) -> None:
    for method, path, body in [("GET", f"/v1/jobs/{job_id}", None), ("GET", "/v1/jobs", None),
                               ("POST", "/v1/jobs", {"model": TINY_MODEL, "prompt": "hi"})]:
        r = requests.request(method, url + path, json=body, timeout=30)
        assert r.status_code == 503, (method, path, r.status_code, r.text)
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["code"] == "database_unavailable", r.json()
    health = requests.get(f"{url}/healthz", timeout=30)
    assert health.status_code == 503 and health.json()["error"]["code"] == "database_unavailable"


def test_jobs_finished_while_the_database_is_down_are_stored_once_it_is_back(
    private_postgres: PrivatePostgres, tiny_gguf: Path, tmp_path: Path  # noqa: F811
) -> None:
    database_url = private_postgres.create_database()
    migrate.upgrade(database_url)
    receiver = Receiver()
    env = {
        "DATABASE_URL": database_url,
        "GENQ_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "GENQ_MODELS": f"{TINY_MODEL}={tiny_gguf}",
        "GENQ_BATCH_SIZE": str(BATCH),
        "GENQ_LEASE_SECONDS": "2",
        "GENQ_SWEEP_INTERVAL": "1",
        "GENQ_REPUBLISH_AFTER": "2",
        "GENQ_JOB_TIMEOUT": "300",
        "GENQ_WEBHOOK_ALLOW": "127.0.0.1",
        "GENQ_WEBHOOK_SWEEP_MS": "500",
        # a delivery whose attempts fell into the outage is retried within seconds of its end, not after the
        # default schedule's 5 min: what is checked is that each completed webhook arrives, not the schedule
        "GENQ_WEBHOOK_RETRY_SCHEDULE": "1,2,4,8,15,30",
        "OMP_NUM_THREADS": "1",  # one compute thread: on a loaded machine, spinning OpenMP threads slow it badly
    }
    app = create_app(Settings.from_env(env))
    api = ApiThread(app)
    worker = Child(["worker", "--models", TINY_MODEL], env, cwd=tmp_path)
    try:
        worker.wait_for_line("ready in", START_TIMEOUT_S)
        body = {"model": TINY_MODEL, "prompt": "Tell a story.", "max_attempts": 1, "webhook": receiver.url(),
                "params": {"max_new_tokens": TOKENS, "ignore_eos": True}}
        ids = [requests.post(f"{api.url}/v1/jobs", json=body, timeout=30).json()["id"] for _ in range(JOBS)]

        def running() -> int:
            return sum(requests.get(f"{api.url}/v1/jobs/{j}", timeout=30).json()["status"] == "running" for j in ids)

        wait_until(lambda: running() >= BATCH, START_TIMEOUT_S, "the first jobs did not start", interval=0.05)
        time.sleep(0.5)  # some text generated and written as events

        private_postgres.stop()
        stopped = time.monotonic()
        probes = 0
        # down for DOWN_S, and until the running jobs' results wait to be stored (a loaded machine is slow);
        # the API is asked all along
        while time.monotonic() - stopped < DOWN_S or len(_held(worker)) < BATCH:
            assert time.monotonic() - stopped < MAX_DOWN_S, "no result waited for the database"
            _errors_are_503_with_retry_after(api.url, ids[0])
            probes += 1
            time.sleep(1.0)
        private_postgres.start()
        down_s = time.monotonic() - stopped

        jobs = [wait_for_job(api.url, j, FINISH_TIMEOUT_S) for j in ids]
        outcomes = [(j["status"], j["attempts"], (j.get("error") or {}).get("code")) for j in jobs]
        print(f"outage of {down_s:.1f}s ({probes} rounds of 503s), {JOBS} jobs: {outcomes}; results held "
              f"through it: {len(_held(worker))}")
        assert outcomes == [("succeeded", 1, None)] * JOBS, worker.output(200)
        for job in jobs:
            assert job["output"]["usage"]["completion_tokens"] == TOKENS and job["output"]["text"]
            events = list(read_sse(requests.get(f"{api.url}/v1/jobs/{job['id']}/events", stream=True, timeout=30)))
            text = "".join(e["data"]["text"] for e in events if e.get("event") == "delta")
            assert text == job["output"]["text"], job["id"]
        finished = [line for line in worker.lines if ": succeeded (attempt" in line]
        assert len(finished) == JOBS, finished  # each stored once

        def webhooks_arrived() -> bool:
            done = {job["id"] for job in map(json.loads, (r.body for r in receiver.received))
                    if job["status"] == "succeeded"}
            return done >= set(ids)

        try:
            wait_until(webhooks_arrived, 150, "a completed webhook did not arrive")
        except TimeoutError:  # say which, and where their deliveries stand
            with app.extensions[EXTENSION_KEY].sessions() as session:
                rows = session.execute(select(WebhookDelivery.job_id, WebhookDelivery.event, WebhookDelivery.status,
                                              WebhookDelivery.attempt_count, WebhookDelivery.next_attempt_at,
                                              WebhookDelivery.locked_until, WebhookDelivery.dispatched_at)
                                       .where(WebhookDelivery.event == "job.completed")).all()
            raise AssertionError(f"deliveries: {rows}\nworker: {worker.output(80)}") from None
    finally:
        worker.stop()
        api.stop()
        app.extensions[EXTENSION_KEY].db.dispose()
        receiver.close()
