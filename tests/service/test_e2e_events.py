"""End to end on the production shape, for webhooks, event streams and batches: real HTTP, PostgreSQL, Redis,
a generation worker (`genq worker --queues models`, the real default model) and a separate webhook worker
(`genq worker --queues webhooks`), delivering to a real receiver that verifies with `standardwebhooks`."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from e2e_helpers import REDIS_URL, ApiThread, Child, read_sse, wait_for_job, wait_until
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook
from webhooks.receiver import Receiver, Reply

from api import create_app
from genq.settings import Settings
from genq.store.db import make_engine, make_session_factory
from genq.store.jobs import JobStore
from genq.store.schema import WebhookDelivery, utcnow

pytestmark = pytest.mark.slow

LOAD_TIMEOUT_S = 300
JOB_TIMEOUT_S = 180
FRANCE = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
          "params": {"max_new_tokens": 24}}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def env(migrated_postgresql_url: str, redis_key_prefix: str) -> dict[str, str]:
    return {
        "DATABASE_URL": migrated_postgresql_url,
        "GENQ_BROKER_URL": REDIS_URL,
        "GENQ_BROKER_KEY_PREFIX": redis_key_prefix,
        "GENQ_BATCH_SIZE": "4",
        "GENQ_WEBHOOK_ALLOW": "127.0.0.1",
        "GENQ_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5",
        "GENQ_WEBHOOK_SWEEP_MS": "300",
        "GENQ_EVENTS_POLL_MS": "50",
    }


@pytest.fixture(scope="module")
def workers(env: dict[str, str]) -> Iterator[tuple[Child, Child]]:
    hooks = Child(["worker", "--queues", "webhooks"], env)
    model = Child(["worker", "--queues", "models"], env)
    try:
        model.wait_for_line("ready in", LOAD_TIMEOUT_S)  # the preloaded model is ready
        hooks.wait_for_line("ready", LOAD_TIMEOUT_S)
        yield model, hooks
    finally:
        model.stop()
        hooks.stop()


@pytest.fixture(scope="module")
def api_url(env: dict[str, str], workers: tuple[Child, Child]) -> Iterator[str]:
    server = ApiThread(create_app(Settings.from_env(env)))
    yield server.url
    server.stop()


def _deliveries(api_url: str, job_id: str) -> list[dict[str, Any]]:
    return requests.get(f"{api_url}/v1/jobs/{job_id}/deliveries", timeout=10).json()["data"]


def _received_for(receiver: Receiver, job_id: str) -> list[Any]:
    return [r for r in receiver.received if job_id in r.headers.get("webhook-id", "")]


def test_a_job_webhook_is_delivered_signed_by_the_webhook_worker(api_url: str, receiver: Receiver) -> None:
    body = {**FRANCE, "webhook": receiver.url("/jobs"), "webhook_events_filter": ["started", "completed"]}
    job = requests.post(f"{api_url}/v1/jobs", json=body, timeout=10).json()
    final = wait_for_job(api_url, job["id"], JOB_TIMEOUT_S)
    assert final["status"] == "succeeded"
    wait_until(lambda: len(_received_for(receiver, job["id"])) == 2, 30, "two webhook messages did not arrive")
    secret = requests.get(f"{api_url}/v1/webhooks/secret", timeout=10).json()["secret"]
    verified = {r.headers["webhook-id"]: Webhook(secret).verify(r.body, r.headers)
                for r in _received_for(receiver, job["id"])}
    assert verified[f"msg_{job['id']}_started"]["status"] == "running"
    completed = verified[f"msg_{job['id']}_completed"]
    assert completed == requests.get(f"{api_url}/v1/jobs/{job['id']}", timeout=10).json()
    assert "Paris" in completed["output"]["text"]
    statuses = wait_until(
        lambda: (lambda d: d if all(x["status"] == "succeeded" for x in d) else None)(_deliveries(api_url, job["id"])),
        10, "deliveries were not recorded as succeeded")
    assert [d["event"] for d in statuses] == ["job.started", "job.completed"]
    assert all(len(d["attempts"]) == 1 for d in statuses)


def test_a_failing_receiver_is_retried_by_the_worker_with_the_same_webhook_id(
    api_url: str, receiver: Receiver
) -> None:
    receiver.will_reply(Reply(503), Reply(500, headers={"Retry-After": "1"}))
    job = requests.post(f"{api_url}/v1/jobs", timeout=10,
                        json={"prompt": "One, two,", "params": {"max_new_tokens": 4}, "webhook": receiver.url()}).json()
    wait_for_job(api_url, job["id"], JOB_TIMEOUT_S)
    [delivery] = wait_until(
        lambda: (lambda d: d if d and d[0]["status"] == "succeeded" else None)(_deliveries(api_url, job["id"])),
        30, "the delivery did not succeed after retries")
    assert [(a["outcome"], a["status_code"]) for a in delivery["attempts"]] == [
        ("retry", 503), ("retry", 500), ("succeeded", 200)]
    assert {r.headers["webhook-id"] for r in _received_for(receiver, job["id"])} == {delivery["webhook_id"]}


def test_the_sweep_delivers_a_delivery_whose_message_was_lost(
    env: dict[str, str], api_url: str, receiver: Receiver
) -> None:
    settings = Settings.from_env(env)
    sessions = make_session_factory(make_engine(settings.database_url))
    store = JobStore(sessions)  # no publisher: the status change records the delivery but sends no message
    job = store.create(model=settings.default_model, input={"prompt": "x"}, params={},
                       webhook=receiver.url("/swept"), webhook_events_filter=["completed"])
    assert store.cancel(job.id)
    with sessions.begin() as session:  # as if its message had been published a minute ago and lost
        session.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == job.id)
                        .values(dispatched_at=utcnow() - timedelta(seconds=60)))
    wait_until(lambda: _received_for(receiver, job.id), 20, "the swept delivery did not arrive")
    assert json.loads(_received_for(receiver, job.id)[0].body)["status"] == "canceled"


def test_the_event_stream_carries_the_text_as_it_is_generated(api_url: str) -> None:
    job = requests.post(f"{api_url}/v1/jobs", json={"prompt": "Once upon a time", "params": {
        "max_new_tokens": 24, "ignore_eos": True}}, timeout=10).json()
    frames = []
    with requests.get(f"{api_url}/v1/jobs/{job['id']}/events", stream=True, timeout=JOB_TIMEOUT_S) as response:
        for frame in read_sse(response):
            if "event" in frame:
                frames.append((time.monotonic(), frame))
    final = requests.get(f"{api_url}/v1/jobs/{job['id']}", timeout=10).json()
    kinds = [f["event"] for _, f in frames]
    assert [f["data"]["status"] for _, f in frames if f["event"] == "status"] == ["queued", "running", "succeeded"]
    assert kinds[-1] == "done" and frames[-1][1]["data"] == final
    deltas = [(t, f) for t, f in frames if f["event"] == "delta"]
    assert "".join(f["data"]["text"] for _, f in deltas) == final["output"]["text"]
    assert len(deltas) >= 2 and deltas[0][0] < frames[-1][0]  # several pieces, the first before the end
    ids = [int(f["id"]) for _, f in frames[:-1]]
    assert ids == list(range(1, len(ids) + 1))


def test_a_batch_runs_every_line_and_its_results_are_keyed_by_custom_id(api_url: str) -> None:
    lines = [{"custom_id": f"q{i}", "prompt": f"{i} + {i} =", "params": {"max_new_tokens": 6}} for i in range(3)]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    response = requests.post(f"{api_url}/v1/batches", data=body, headers={"content-type": "application/x-ndjson"},
                             timeout=10)
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    batch = wait_until(
        lambda: (lambda b: b if b["status"] == "completed" else None)(
            requests.get(f"{api_url}/v1/batches/{batch_id}", timeout=10).json()),
        JOB_TIMEOUT_S, "the batch did not complete")
    assert batch["counts"]["succeeded"] == 3 and batch["counts"]["total"] == 3
    results = [json.loads(line) for line in
               requests.get(f"{api_url}/v1/batches/{batch_id}/results", timeout=10).text.splitlines()]
    assert [r["custom_id"] for r in results] == ["q0", "q1", "q2"]
    assert all(r["job"]["status"] == "succeeded" and r["job"]["output"]["text"] for r in results)
