"""Over real HTTP: cancel, Idempotency-Key, Prefer: wait, scheduling fields and queue positions."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import requests
from api_fixtures import Api, api  # noqa: F401  (fixture)
from e2e_helpers import wait_until
from sqlalchemy import func, select, update

from api import create_app
from genq.settings import Settings
from genq.store.jobs import JobStore
from genq.store.listing import POSITION_CAP, RATE_SAMPLE
from genq.store.schema import IdempotencyKey, Job, utcnow

PROMPT = {"prompt": "Hello", "params": {"max_new_tokens": 4}}


def _post(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{api.url}/v1/jobs", json=body, headers=headers or {}, timeout=90)


def _tagged(tag: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**PROMPT, "metadata": {"tag": tag or uuid.uuid4().hex}, **extra}


def _count_tagged(api: Api, tag: str) -> int:
    return len(requests.get(f"{api.url}/v1/jobs", params={"metadata[tag]": tag}, timeout=10).json()["data"])


def _error(response: requests.Response, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if field is not None:
        assert error.get("field") == field


def _finish(api: Api, job_id: str, text: str = "done") -> None:
    claim = api.store.claim(job_id, "test-worker")
    assert claim is not None
    api.store.succeed(job_id, text=text, finish_reason="eos", prompt_tokens=2, completion_tokens=1,
                      attempt=claim.attempt)


# ---- cancel ----

def test_canceling_a_queued_job_answers_200_with_it_canceled_and_again_the_same(api: Api) -> None:
    job = _post(api, PROMPT).json()
    first = requests.post(f"{api.url}/v1/jobs/{job['id']}/cancel", timeout=10)
    assert first.status_code == 200 and first.json()["status"] == "canceled"
    again = requests.post(f"{api.url}/v1/jobs/{job['id']}/cancel", timeout=10)
    assert again.status_code == 200 and again.json() == first.json()


def test_canceling_a_running_job_answers_202_with_the_cancel_request_recorded(api: Api) -> None:
    job = _post(api, PROMPT).json()
    api.store.claim(job["id"], "test-worker")
    response = requests.post(f"{api.url}/v1/jobs/{job['id']}/cancel", timeout=10)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "running" and body["cancel_requested_at"].endswith("Z")


def test_canceling_a_finished_job_is_409_job_finished(api: Api) -> None:
    job = _post(api, PROMPT).json()
    _finish(api, job["id"])
    _error(requests.post(f"{api.url}/v1/jobs/{job['id']}/cancel", timeout=10), 409, "job_finished")
    assert requests.get(f"{api.url}/v1/jobs/{job['id']}", timeout=10).json()["status"] == "succeeded"


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "nope"])
def test_canceling_an_unknown_job_is_404(api: Api, job_id: str) -> None:
    _error(requests.post(f"{api.url}/v1/jobs/{job_id}/cancel", timeout=10), 404, "job_not_found")


# ---- Idempotency-Key ----

def test_the_same_key_and_body_return_the_same_job_without_a_second_one(api: Api) -> None:
    key, body = f"k-{uuid.uuid4()}", _tagged()
    first = _post(api, body, {"Idempotency-Key": key})
    second = _post(api, {k: body[k] for k in reversed(list(body))}, {"Idempotency-Key": key})  # key order differs
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert _count_tagged(api, body["metadata"]["tag"]) == 1


def test_the_same_key_with_another_body_is_422_idempotency_key_reused(api: Api) -> None:
    key = f"k-{uuid.uuid4()}"
    assert _post(api, _tagged(), {"Idempotency-Key": key}).status_code == 202
    _error(_post(api, _tagged(), {"Idempotency-Key": key}), 422, "idempotency_key_reused", "Idempotency-Key")


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "naïve"])
def test_a_malformed_key_is_422_naming_the_header(api: Api, key: str) -> None:
    _error(_post(api, PROMPT, {"Idempotency-Key": key.encode().decode("latin-1")}), 422, "invalid_value",
           "Idempotency-Key")


def test_concurrent_duplicates_create_exactly_one_job(api: Api) -> None:
    key, body, n = f"k-{uuid.uuid4()}", _tagged(), 8
    barrier = threading.Barrier(n)
    responses: list[requests.Response] = []

    def send() -> None:
        barrier.wait()
        responses.append(_post(api, body, {"Idempotency-Key": key}))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in responses] == [202] * n, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == n - 1
    assert _count_tagged(api, body["metadata"]["tag"]) == 1


def test_a_key_older_than_its_24_hour_retention_may_be_reused(api: Api) -> None:
    key = f"k-{uuid.uuid4()}"
    old = _post(api, _tagged(), {"Idempotency-Key": key}).json()
    with api.store.sessions.begin() as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == key)
                        .values(created_at=utcnow() - timedelta(hours=24, minutes=1)))
    new = _post(api, _tagged(), {"Idempotency-Key": key})
    assert new.status_code == 202 and new.json()["id"] != old["id"]
    again = _post(api, _tagged(), {"Idempotency-Key": key})
    _error(again, 422, "idempotency_key_reused")  # the key now belongs to the new job


def test_a_key_whose_job_the_broker_refused_replays_that_queued_job(api: Api) -> None:
    down = Settings.from_env({"DATABASE_URL": api.settings.database_url, "GENQ_BROKER_URL": "redis://127.0.0.1:9/0"})
    client, key = create_app(down).test_client(), f"k-{uuid.uuid4()}"
    accepted = client.post("/v1/jobs", json=PROMPT, headers={"Idempotency-Key": key})
    assert accepted.status_code == 202 and accepted.get_json()["status"] == "queued"
    retry = _post(api, PROMPT, {"Idempotency-Key": key})
    assert retry.status_code == 202 and retry.json()["id"] == accepted.get_json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"


# ---- Prefer: wait ----

def _finish_when_created(api: Api, tag: str, after_s: float) -> threading.Thread:
    def run() -> None:
        listed = wait_until(lambda: requests.get(f"{api.url}/v1/jobs", params={"metadata[tag]": tag},
                                                 timeout=10).json()["data"], 10, "the job was not created")
        time.sleep(after_s)
        _finish(api, listed[0]["id"], text="waited")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("asked,applied", [(5, 5), (600, 60)])
def test_prefer_wait_answers_200_with_the_job_finished_within_the_wait(api: Api, asked: int, applied: int) -> None:
    tag = uuid.uuid4().hex
    finisher = _finish_when_created(api, tag, after_s=0.5)
    started = time.monotonic()
    response = _post(api, _tagged(tag), {"Prefer": f"respond-async, wait={asked}"})
    finisher.join()
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == f"wait={applied}"
    assert response.json()["status"] == "succeeded" and response.json()["output"]["text"] == "waited"
    assert time.monotonic() - started < 5


def test_prefer_wait_answers_202_with_the_queued_job_after_the_wait(api: Api) -> None:
    started = time.monotonic()
    response = _post(api, PROMPT, {"Prefer": "wait=1"})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert response.headers["Preference-Applied"] == "wait=1"
    assert 1 <= time.monotonic() - started < 5


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "wait=1.5", "wait="])
def test_a_malformed_prefer_wait_is_422_naming_the_header(api: Api, prefer: str) -> None:
    _error(_post(api, PROMPT, {"Prefer": prefer}), 422, "invalid_value", "Prefer")


def test_waiting_requests_hold_no_database_connection(api: Api) -> None:
    # 20 waiters against a pool of 5 (+10 overflow): were a connection held while waiting, some waiters would
    # queue for one until the pool's 30 s timeout
    n, wait_s = 20, 2
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def send() -> None:
        barrier.wait()
        statuses.append(_post(api, PROMPT, {"Prefer": f"wait={wait_s}"}).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [202] * n
    assert time.monotonic() - started < wait_s + 8


# ---- scheduling fields and queue position ----

def test_a_job_shows_its_lifecycle_fields_with_their_defaults(api: Api) -> None:
    job = _post(api, PROMPT).json()
    assert {k: job[k] for k in ("priority", "ttl_seconds", "expires_at", "deadline_seconds", "max_attempts",
                                "cancel_requested_at")} == {
        "priority": 0, "ttl_seconds": None, "expires_at": None, "deadline_seconds": None, "max_attempts": 3,
        "cancel_requested_at": None,
    }
    assert isinstance(job["queue_position"], int) and job["queue_position"] >= 0
    assert "estimated_wait_seconds" in job  # null or seconds: it depends on jobs finished lately


def test_scheduling_fields_are_stored_and_shown(api: Api) -> None:
    job = _post(api, {**PROMPT, "priority": 7, "ttl_seconds": 600, "deadline_seconds": 30, "max_attempts": 5}).json()
    assert (job["priority"], job["ttl_seconds"], job["deadline_seconds"], job["max_attempts"]) == (7, 600, 30, 5)
    assert job["expires_at"] > job["created_at"]
    assert requests.get(f"{api.url}/v1/jobs/{job['id']}", timeout=10).json()["expires_at"] == job["expires_at"]


@pytest.mark.parametrize("field,value", [
    ("priority", 10), ("priority", -1), ("priority", "high"), ("priority", 2.5), ("ttl_seconds", 0),
    ("ttl_seconds", 10**9), ("deadline_seconds", -5), ("deadline_seconds", True), ("max_attempts", 0),
    ("max_attempts", 100),
])
def test_bad_scheduling_fields_are_422_naming_the_field(api: Api, field: str, value: Any) -> None:
    _error(_post(api, {**PROMPT, field: value}), 422, "invalid_value", field)


def test_queue_position_counts_higher_priority_then_earlier_jobs_of_the_model(api: Api) -> None:
    api.cancel_all_queued()
    a = _post(api, PROMPT).json()
    b = _post(api, PROMPT).json()
    c = _post(api, {**PROMPT, "priority": 5}).json()
    positions = {name: requests.get(f"{api.url}/v1/jobs/{j['id']}", timeout=10).json()["queue_position"]
                 for name, j in (("a", a), ("b", b), ("c", c))}
    assert positions == {"c": 0, "a": 1, "b": 2}
    api.store.claim(c["id"], "w")
    running = requests.get(f"{api.url}/v1/jobs/{c['id']}", timeout=10).json()
    assert running["queue_position"] is None and running["estimated_wait_seconds"] is None
    assert requests.get(f"{api.url}/v1/jobs/{b['id']}", timeout=10).json()["queue_position"] == 1


def test_a_long_queue_and_a_busy_model_cost_a_poll_a_bounded_scan(api: Api) -> None:
    """Past POSITION_CAP jobs ahead a poll stops counting (the position is then a lower bound), and a busy
    model's throughput is its last RATE_SAMPLE finished jobs' pace: a poll's cost never grows with the queue."""
    api.cancel_all_queued()
    model = _post(api, PROMPT).json()["model"]
    api.cancel_all_queued()
    now = utcnow()
    ahead = [JobStore.build(model=model, input={"prompt": "x"}, params={}) for _ in range(POSITION_CAP + 5)]
    done = [JobStore.build(model=model, input={"prompt": "x"}, params={}) for _ in range(RATE_SAMPLE + 100)]
    for i, job in enumerate(done):  # one finished every 50 ms, the newest now
        job.status, job.output_text, job.finish_reason = "succeeded", "x", "eos"
        job.started_at = job.completed_at = now - timedelta(seconds=0.05 * i)
    for i, job in enumerate(ahead):
        job.created_at = now - timedelta(seconds=len(ahead) - i)
    with api.store.sessions.begin() as session:
        session.add_all(ahead + done)
    try:
        last = _post(api, PROMPT).json()
        assert (last["queue_position"], last["queue_position_at_least"]) == (POSITION_CAP, True)
        first = requests.get(f"{api.url}/v1/jobs/{ahead[0].id}", timeout=10).json()
        assert (first["queue_position"], first["queue_position_at_least"]) == (0, False)
        third = requests.get(f"{api.url}/v1/jobs/{ahead[2].id}", timeout=10).json()
        # the last 200 jobs took ~10 s (plus the time this test took since): ~20 a second, so the third in line
        # starts in ~0.15 s; counted over the whole 5-minute window (300 jobs) it would be 3 s
        assert third["queue_position"] == 2 and 0.1 <= third["estimated_wait_seconds"] <= 1.5, third
    finally:
        api.cancel_all_queued()
        with api.store.sessions.begin() as session:  # out of the next tests' window
            session.execute(update(Job).where(Job.id.in_([j.id for j in done]))
                            .values(completed_at=now - timedelta(hours=1)))


def test_estimated_wait_follows_the_models_recent_throughput(api: Api) -> None:
    api.cancel_all_queued()
    with api.store.sessions.begin() as session:  # forget earlier tests' finished jobs: none in the window
        session.execute(update(Job).where(Job.completed_at.is_not(None))
                        .values(completed_at=utcnow() - timedelta(hours=1)))
    queued = [_post(api, PROMPT).json() for _ in range(2)]
    assert queued[1]["estimated_wait_seconds"] is None  # nothing finished lately: unknown
    for _ in range(3):
        _finish(api, _post(api, {**PROMPT, "priority": 9}).json()["id"])
    # 3 jobs in the last 300 s: one per 100 s; the second in line starts after about 2 more finish
    assert requests.get(f"{api.url}/v1/jobs/{queued[1]['id']}", timeout=10).json()["estimated_wait_seconds"] == 200.0
    with api.store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) == 2
