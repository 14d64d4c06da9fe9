"""The sweeper: expires, settles lost jobs, re-publishes what may have lost its message; concurrent sweeps
change each job once. Messages go to a real (file-system) broker and are counted there."""
from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from genq.broker import Publisher, make_celery
from genq.lifecycle import Schedule, republish_due
from genq.settings import Settings
from genq.store.db import make_engine, make_session_factory
from genq.store.jobs import JobStore
from genq.store.leases import renew_leases
from genq.store.lost_leases import LostLeases
from genq.store.schema import IdempotencyKey, Job, utcnow
from genq.sweeper import sweep

PARAMS = {"max_new_tokens": 8}
AFTER = 60  # republish_after, seconds


@pytest.fixture
def publisher(settings: Settings) -> Publisher:
    return Publisher(make_celery(settings))


def _messages(settings: Settings, job_id: str) -> list[int]:
    """The broker priority of every message in the file-system broker that carries `job_id`."""
    folder = Path(settings.broker_url[len("filesystem://"):]) / "queue"
    found = []
    for path in folder.glob("*.msg"):
        message = json.loads(path.read_text())
        if json.loads(base64.b64decode(message["body"]))[0] == [job_id]:
            found.append(message["properties"]["priority"])
    return found


def _job(store: JobStore, **schedule):  # type: ignore[no-untyped-def]
    return store.create(model="m", input={"prompt": "hi"}, params=PARAMS, schedule=Schedule(**schedule))


def _age(store: JobStore, job_id: str, seconds: float, **more) -> None:  # type: ignore[no-untyped-def]
    """Make a job look `seconds` older: created and last published that long ago."""
    then = utcnow() - timedelta(seconds=seconds)
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(created_at=then, published_at=then, **more))


def test_a_queued_job_past_its_ttl_is_expired(store: JobStore, publisher: Publisher) -> None:
    job = _job(store, ttl_seconds=30)
    _age(store, job.id, 31, expires_at=utcnow() - timedelta(seconds=1))
    assert sweep(store, publisher, AFTER).expired >= 1
    assert store.get(job.id).status == "expired"


def test_a_queued_job_is_republished_once_its_message_may_be_lost_then_backs_off(
    store: JobStore, publisher: Publisher, settings: Settings
) -> None:
    fresh, old = _job(store), _job(store, priority=7)
    _age(store, old.id, AFTER + 1)
    sweep(store, publisher, AFTER)
    assert _messages(settings, old.id) == [9 - 7]  # at its priority (kombu's numbers are inverted)
    assert _messages(settings, fresh.id) == []
    sweep(store, publisher, AFTER)  # published just now: not again
    assert len(_messages(settings, old.id)) == 1
    assert store.get(old.id).status == "queued"


def test_republishing_waits_as_long_as_the_job_had_waited() -> None:
    now = utcnow()
    created = now - timedelta(hours=3)
    assert republish_due(now, created, now - timedelta(seconds=61), 60) is False  # waited 3h before: back off
    assert republish_due(now, created, now - timedelta(hours=1, seconds=1), 60) is True  # capped at an hour
    assert republish_due(now, now - timedelta(seconds=70), now - timedelta(seconds=61), 60) is True


def test_a_running_job_whose_worker_was_lost_is_republished_for_a_takeover(
    store: JobStore, publisher: Publisher, settings: Settings
) -> None:
    job = _job(store)
    store.claim(job.id, "w1", lease_seconds=30)
    _age(store, job.id, 10, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert sweep(store, publisher, AFTER).republished >= 1
    assert len(_messages(settings, job.id)) == 1
    sweep(store, publisher, AFTER)
    assert len(_messages(settings, job.id)) == 1  # once per lost lease, not once per sweep
    claim = store.claim(job.id, "w2")
    assert claim is not None and claim.attempt == 2


def test_a_lost_job_without_attempts_left_fails_and_a_lost_canceled_one_is_canceled(
    store: JobStore, publisher: Publisher, settings: Settings
) -> None:
    exhausted, canceled = _job(store, max_attempts=1), _job(store)
    for job in (exhausted, canceled):
        store.claim(job.id, "w")
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == canceled.id).values(cancel_requested_at=utcnow()))
    for job in (exhausted, canceled):
        _age(store, job.id, 10, lease_expires_at=utcnow() - timedelta(seconds=1))
    sweep(store, publisher, AFTER)
    assert (store.get(exhausted.id).status, store.get(exhausted.id).error_code) == ("failed", "attempts_exhausted")
    assert store.get(canceled.id).status == "canceled"
    assert _messages(settings, exhausted.id) == [] and _messages(settings, canceled.id) == []


def test_a_sweeper_counts_a_worker_lost_only_once_it_saw_the_lease_stay_expired(
    store: JobStore, publisher: Publisher, settings: Settings
) -> None:
    exhausted, retried = _job(store, max_attempts=1), _job(store)
    for job in (exhausted, retried):
        store.claim(job.id, "w1", lease_seconds=30)
        _age(store, job.id, 10, lease_expires_at=utcnow() - timedelta(seconds=1))
    lost = LostLeases(confirm_s=5)
    now = utcnow()
    sweep(store, publisher, AFTER, now=now, lost_leases=lost)  # first seen: nothing yet
    sweep(store, publisher, AFTER, now=now + timedelta(seconds=4), lost_leases=lost)
    assert [store.get(j.id).status for j in (exhausted, retried)] == ["running", "running"]
    assert _messages(settings, retried.id) == []
    sweep(store, publisher, AFTER, now=now + timedelta(seconds=5), lost_leases=lost)
    assert (store.get(exhausted.id).status, store.get(exhausted.id).error_code) == ("failed", "attempts_exhausted")
    assert len(_messages(settings, retried.id)) == 1 and store.claim(retried.id, "w2").attempt == 2


def test_a_lease_renewed_after_an_outage_keeps_its_job(store: JobStore, publisher: Publisher,
                                                       settings: Settings) -> None:
    job = _job(store, max_attempts=1)
    claim = store.claim(job.id, "w1", lease_seconds=30)
    _age(store, job.id, 60, lease_expires_at=utcnow() - timedelta(seconds=20))  # nobody could renew it
    lost = LostLeases(confirm_s=5)
    now = utcnow()
    sweep(store, publisher, AFTER, now=now, lost_leases=lost)  # the database is back: seen expired
    assert renew_leases(store, [(job.id, claim.attempt)], 1) == set()  # the live worker's keeper renews...
    _age(store, job.id, 60, lease_expires_at=utcnow() - timedelta(seconds=1))  # ...and it expired again
    sweep(store, publisher, AFTER, now=now + timedelta(seconds=6), lost_leases=lost)  # a new lease: first seen
    assert store.get(job.id).status == "running" and _messages(settings, job.id) == []
    lost.forget()  # a failed sweep forgets what it saw
    sweep(store, publisher, AFTER, now=now + timedelta(seconds=12), lost_leases=lost)
    assert store.get(job.id).status == "running"


def test_idempotency_keys_past_their_retention_are_forgotten(store: JobStore, publisher: Publisher) -> None:
    old, new = _job(store), _job(store)
    with store.sessions.begin() as session:
        session.add(IdempotencyKey(key=f"old-{old.id}", job_id=old.id, request_hash="h",
                                   created_at=utcnow() - timedelta(hours=24, seconds=1)))
        session.add(IdempotencyKey(key=f"new-{new.id}", job_id=new.id, request_hash="h", created_at=utcnow()))
    sweep(store, publisher, AFTER)
    with store.sessions() as session:
        keys = set(session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.job_id.in_([old.id, new.id]))))
    assert keys == {f"new-{new.id}"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_sweepers_republish_each_job_once(database_url: str, settings: Settings) -> None:
    n = 6
    seed_store = JobStore(make_session_factory(make_engine(database_url)))
    jobs = [_job(seed_store) for _ in range(5)]
    for job in jobs:
        _age(seed_store, job.id, AFTER + 1)
    stores = [JobStore(make_session_factory(make_engine(database_url))) for _ in range(n)]
    publishers = [Publisher(make_celery(settings)) for _ in range(n)]
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        sweep(stores[i], publishers[i], AFTER)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(_messages(settings, job.id)) for job in jobs] == [1] * len(jobs)
