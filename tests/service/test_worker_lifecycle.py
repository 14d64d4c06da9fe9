"""A worker process's side of the lifecycle, on the real engine (a tiny random model) and the real database:
cancel requests and deadlines stop a running generation keeping its text; the lease is renewed while the job
runs; a worker whose claim was taken over stores nothing."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tiny_model import LONG_TOKENS, TINY_MODEL, tiny_gguf  # noqa: F401  (fixture)

from genq.lifecycle import Schedule
from genq.settings import ModelSpec
from genq.store.jobs import JobStore
from genq.store.leases import request_cancel
from genq.store.schema import Job, utcnow
from workers.engine_host import EngineHost, engine_factory
from workers.job_runner import JobOutcome, execute_job
from workers.lease_keeper import LeaseKeeper

LEASE_S = 2.0


@pytest.fixture(scope="module")
def host(tiny_gguf: Path) -> Iterator[EngineHost]:
    engines = EngineHost({TINY_MODEL: ModelSpec(TINY_MODEL, tiny_gguf, "gguf")}, engine_factory(4, None))
    engines.get(TINY_MODEL)  # load once, before any test's clock starts
    yield engines
    engines.stop_all()


@pytest.fixture
def keeper(store: JobStore) -> Iterator[LeaseKeeper]:
    kept = LeaseKeeper(store, lease_seconds=LEASE_S)
    yield kept
    kept.stop()


class Run:
    """execute_job on a thread, as a Celery task thread runs it."""

    def __init__(self, store: JobStore, host: EngineHost, keeper: LeaseKeeper | None, job_id: str):
        self.outcome: JobOutcome | None = None
        self.thread = threading.Thread(target=lambda: setattr(self, "outcome", execute_job(
            job_id, store, host, "w1", timeout=120, keeper=keeper, lease_seconds=LEASE_S)))
        self.thread.start()

    def join(self, timeout: float = 60) -> JobOutcome | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the job did not end"
        return self.outcome


def _long_job(store: JobStore, **schedule: Any) -> str:
    return store.create(model=TINY_MODEL, input={"prompt": "Tell a long story."},
                        params={"max_new_tokens": LONG_TOKENS, "ignore_eos": True},
                        schedule=Schedule(**schedule)).id


def _wait_running(store: JobStore, job_id: str, then: float = 0.5) -> None:
    deadline = time.monotonic() + 30
    while store.get(job_id).status != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    time.sleep(then)  # let it produce some text


def test_a_cancel_request_stops_the_running_generation_keeping_its_text(
    store: JobStore, host: EngineHost, keeper: LeaseKeeper
) -> None:
    job_id = _long_job(store)
    run = Run(store, host, keeper, job_id)
    _wait_running(store, job_id)
    asked = time.monotonic()
    request_cancel(store, job_id)
    assert run.join() is JobOutcome.CANCELED
    stopped_after = time.monotonic() - asked
    job = store.get(job_id)
    assert (job.status, job.finish_reason) == ("canceled", "canceled")
    assert job.output_text and 0 < job.completion_tokens < LONG_TOKENS
    assert stopped_after < 2.0  # a 0.2 s poll, then out of the batch before the next step


def test_a_job_past_its_deadline_fails_deadline_exceeded_keeping_its_text(
    store: JobStore, host: EngineHost, keeper: LeaseKeeper
) -> None:
    job_id = _long_job(store, deadline_seconds=1)
    started = time.monotonic()
    assert Run(store, host, keeper, job_id).join() is JobOutcome.FAILED
    job = store.get(job_id)
    assert (job.status, job.error_code) == ("failed", "deadline_exceeded")
    assert job.output_text and 0 < job.completion_tokens < LONG_TOKENS
    assert 1.0 <= time.monotonic() - started < 10


def test_the_lease_is_renewed_while_the_job_runs(store: JobStore, host: EngineHost, keeper: LeaseKeeper) -> None:
    job_id = _long_job(store)
    run = Run(store, host, keeper, job_id)
    _wait_running(store, job_id, then=LEASE_S * 1.5)
    job = store.get(job_id)
    assert job.status == "running" and job.lease_expires_at > utcnow()  # would have run out unrenewed
    request_cancel(store, job_id)
    run.join()


def test_a_worker_whose_claim_was_taken_over_stops_and_stores_nothing(
    store: JobStore, host: EngineHost, keeper: LeaseKeeper
) -> None:
    job_id = _long_job(store)
    run = Run(store, host, keeper, job_id)
    _wait_running(store, job_id)
    # as if this worker had stalled past its lease and a sweeper had declared it lost: another claims the job
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1),
                                                                   published_at=utcnow()))
    assert store.claim(job_id, "w2", lease_seconds=60).attempt == 2
    assert run.join() is JobOutcome.SKIPPED
    job = store.get(job_id)
    assert (job.status, job.attempts, job.worker_id, job.output_text) == ("running", 2, "w2", None)


def test_a_message_for_a_job_past_its_ttl_expires_it_without_running_it(store: JobStore, host: EngineHost) -> None:
    job_id = _long_job(store, ttl_seconds=5)
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert execute_job(job_id, store, host, "w1", timeout=5) is JobOutcome.EXPIRED
    job = store.get(job_id)
    assert (job.status, job.attempts, job.started_at) == ("expired", 0, None)


def test_a_message_for_a_canceled_queued_job_does_nothing(store: JobStore, host: EngineHost) -> None:
    job_id = _long_job(store)
    request_cancel(store, job_id)
    assert execute_job(job_id, store, host, "w1", timeout=5) is JobOutcome.SKIPPED
    assert store.get(job_id).attempts == 0
