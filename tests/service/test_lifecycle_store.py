"""Leases, takeovers, attempts, TTL expiry and cancel requests in the job store: each one compare-and-set."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from genq.lifecycle import Schedule, ScheduleError
from genq.store.jobs import JobStore
from genq.store.leases import CancelOutcome, held_states, renew_leases, request_cancel, settle_unclaimable
from genq.store.schema import Job, utcnow

PARAMS = {"max_new_tokens": 8}


def _job(store: JobStore, **schedule):  # type: ignore[no-untyped-def]
    return store.create(model="m", input={"prompt": "hi"}, params=PARAMS, schedule=Schedule(**schedule))


def _set(store: JobStore, job_id: str, **values) -> None:  # type: ignore[no-untyped-def]
    """Move a job's clock-dependent columns (a lease or TTL running out) without waiting for them."""
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _expire_lease(store: JobStore, job_id: str) -> None:
    """Its worker is lost: the lease ran out, and a sweeper saw it stay so and re-published the job."""
    now = utcnow()
    _set(store, job_id, lease_expires_at=now - timedelta(seconds=1), published_at=now)


def test_an_expired_lease_no_sweeper_declared_lost_keeps_the_job_with_its_worker(store: JobStore) -> None:
    # e.g. just after a database outage, before the worker renewed: a duplicate message must not take the job
    job = _job(store, max_attempts=1)
    claim = store.claim(job.id, "w1")
    now = utcnow()
    _set(store, job.id, lease_expires_at=now - timedelta(seconds=1), published_at=now - timedelta(seconds=60))
    assert store.claim(job.id, "w2") is None
    assert settle_unclaimable(store, job.id) is None
    assert request_cancel(store, job.id)[0] is CancelOutcome.REQUESTED
    output = dict(text="kept", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    assert store.succeed(job.id, attempt=claim.attempt, **output)
    got = store.get(job.id)
    assert (got.status, got.output_text, got.attempts) == ("succeeded", "kept", 1)


def test_a_claim_holds_the_job_under_a_lease_that_blocks_other_claims(store: JobStore) -> None:
    job = _job(store)
    claim = store.claim(job.id, "w1", lease_seconds=30)
    assert claim is not None and claim.attempt == 1
    got = store.get(job.id)
    assert got.lease_expires_at == claim.lease_expires_at and got.lease_expires_at > utcnow() + timedelta(seconds=25)
    assert store.claim(job.id, "w2") is None


def test_a_running_job_whose_lease_expired_is_taken_over_with_the_next_attempt(store: JobStore) -> None:
    job = _job(store)
    first = store.claim(job.id, "w1")
    _expire_lease(store, job.id)
    second = store.claim(job.id, "w2")
    assert second is not None and (first.attempt, second.attempt) == (1, 2)
    got = store.get(job.id)
    assert (got.status, got.attempts, got.worker_id) == ("running", 2, "w2")


def test_a_worker_whose_lease_was_taken_over_cannot_store_its_outcome(store: JobStore) -> None:
    job = _job(store)
    first = store.claim(job.id, "w1")
    _expire_lease(store, job.id)
    second = store.claim(job.id, "w2")
    output = dict(text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    assert store.succeed(job.id, attempt=first.attempt, **output) is False
    assert store.fail(job.id, "boom", "late", attempt=first.attempt) is False
    assert store.cancel(job.id, attempt=first.attempt) is False
    assert store.succeed(job.id, attempt=second.attempt, **{**output, "text": "mine"}) is True
    got = store.get(job.id)
    assert (got.status, got.output_text, got.attempts, got.lease_expires_at) == ("succeeded", "mine", 2, None)


def test_a_lost_job_with_no_attempts_left_is_not_taken_over_but_fails_attempts_exhausted(store: JobStore) -> None:
    job = _job(store, max_attempts=2)
    for worker in ("w1", "w2"):
        assert store.claim(job.id, worker) is not None
        _expire_lease(store, job.id)
    assert store.claim(job.id, "w3") is None
    assert settle_unclaimable(store, job.id) == "failed"
    got = store.get(job.id)
    assert (got.status, got.error_code, got.attempts) == ("failed", "attempts_exhausted", 2)


def test_a_queued_job_past_its_ttl_is_not_claimed_and_expires(store: JobStore) -> None:
    job = _job(store, ttl_seconds=60)
    assert store.get(job.id).expires_at == job.created_at + timedelta(seconds=60)
    _set(store, job.id, expires_at=utcnow() - timedelta(seconds=1))
    assert store.claim(job.id, "w") is None
    assert settle_unclaimable(store, job.id) == "expired"
    got = store.get(job.id)
    assert (got.status, got.error_code, got.attempts) == ("expired", "expired", 0)
    assert got.completed_at is not None


def test_a_queued_job_within_its_ttl_is_claimed_and_the_ttl_no_longer_applies(store: JobStore) -> None:
    job = _job(store, ttl_seconds=60)
    assert store.claim(job.id, "w") is not None
    _set(store, job.id, expires_at=utcnow() - timedelta(seconds=1))
    assert store.expire(job.id) is False and store.get(job.id).status == "running"


def test_canceling_a_queued_job_cancels_it_at_once_and_again_is_idempotent(store: JobStore) -> None:
    job = _job(store)
    outcome, got = request_cancel(store, job.id)
    assert outcome is CancelOutcome.CANCELED and got.status == "canceled"
    assert store.claim(job.id, "w") is None  # the worker that gets its message does nothing
    outcome, again = request_cancel(store, job.id)
    assert outcome is CancelOutcome.CANCELED and again.completed_at == got.completed_at


def test_canceling_a_running_job_records_a_request_for_its_worker(store: JobStore) -> None:
    job = _job(store)
    claim = store.claim(job.id, "w")
    outcome, got = request_cancel(store, job.id)
    assert outcome is CancelOutcome.REQUESTED and got.status == "running" and got.cancel_requested_at is not None
    assert held_states(store, [job.id])[job.id].cancel_requested is True
    outcome, again = request_cancel(store, job.id)  # asking twice keeps the first request's time
    assert outcome is CancelOutcome.REQUESTED and again.cancel_requested_at == got.cancel_requested_at
    assert store.cancel(job.id, attempt=claim.attempt, text="par", finish_reason="canceled",
                        prompt_tokens=3, completion_tokens=1)
    got = store.get(job.id)
    assert (got.status, got.output_text, got.finish_reason) == ("canceled", "par", "canceled")


def test_canceling_a_running_job_whose_worker_was_lost_cancels_it_at_once(store: JobStore) -> None:
    job = _job(store)
    store.claim(job.id, "w")
    _expire_lease(store, job.id)
    outcome, got = request_cancel(store, job.id)
    assert outcome is CancelOutcome.CANCELED and got.status == "canceled"


def test_a_lost_job_with_a_cancel_request_is_canceled_not_taken_over(store: JobStore) -> None:
    job = _job(store)
    store.claim(job.id, "w1")
    request_cancel(store, job.id)
    _expire_lease(store, job.id)
    assert store.claim(job.id, "w2") is None
    assert settle_unclaimable(store, job.id) == "canceled"


@pytest.mark.parametrize("final", ["succeeded", "failed", "expired"])
def test_canceling_a_finished_job_reports_it_finished_and_changes_nothing(store: JobStore, final: str) -> None:
    job = _job(store, ttl_seconds=1)
    if final == "expired":
        _set(store, job.id, expires_at=utcnow() - timedelta(seconds=1))
        store.expire(job.id)
    else:
        claim = store.claim(job.id, "w")
        if final == "succeeded":
            store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1,
                          attempt=claim.attempt)
        else:
            store.fail(job.id, "boom", "no", attempt=claim.attempt)
    outcome, got = request_cancel(store, job.id)
    assert outcome is CancelOutcome.FINISHED and got.status == final and got.cancel_requested_at is None


def test_renewing_leases_extends_held_jobs_and_reports_the_ones_taken_over(store: JobStore) -> None:
    kept, taken = _job(store), _job(store)
    a = store.claim(kept.id, "w", lease_seconds=5)
    b = store.claim(taken.id, "w", lease_seconds=5)
    _expire_lease(store, taken.id)
    store.claim(taken.id, "other")
    lost = renew_leases(store, [(kept.id, a.attempt), (taken.id, b.attempt)], lease_seconds=60)
    assert lost == {(taken.id, b.attempt)}
    assert store.get(kept.id).lease_expires_at > utcnow() + timedelta(seconds=55)


def test_a_failure_can_keep_partial_output(store: JobStore) -> None:
    job = _job(store, deadline_seconds=5)
    claim = store.claim(job.id, "w")
    assert store.fail(job.id, "deadline_exceeded", "late", attempt=claim.attempt, text="Once upon",
                      finish_reason="canceled", prompt_tokens=4, completion_tokens=2)
    got = store.get(job.id)
    assert (got.status, got.error_code, got.output_text, got.completion_tokens) == (
        "failed", "deadline_exceeded", "Once upon", 2)


@pytest.mark.parametrize("fields,field", [
    ({"priority": 10}, "priority"), ({"priority": -1}, "priority"), ({"priority": 1.5}, "priority"),
    ({"priority": True}, "priority"), ({"ttl_seconds": 0}, "ttl_seconds"), ({"ttl_seconds": "60"}, "ttl_seconds"),
    ({"deadline_seconds": 0}, "deadline_seconds"), ({"deadline_seconds": 10**9}, "deadline_seconds"),
    ({"max_attempts": 0}, "max_attempts"), ({"max_attempts": 11}, "max_attempts"),
])
def test_schedules_out_of_range_name_the_field(fields: dict, field: str) -> None:
    with pytest.raises(ScheduleError) as e:
        Schedule.from_body(fields)
    assert e.value.field == field


def test_defaults_are_priority_zero_no_ttl_no_deadline_three_attempts(store: JobStore) -> None:
    got = store.get(store.create(model="m", input={"prompt": "hi"}, params=PARAMS).id)
    assert (got.priority, got.expires_at, got.deadline_seconds, got.max_attempts) == (0, None, None, 3)
