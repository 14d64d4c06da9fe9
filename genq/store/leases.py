"""Leases and cancel requests in the database: what workers, the API and the sweeper ask of running jobs.

A running job is held by the worker whose claim set `lease_expires_at`; the worker process renews the
lease of every job it holds (workers/lease_keeper.py). A job whose lease expired may have lost its worker; once a
sweeper has seen it stay expired long enough to say so (genq/store/lost_leases.py), `settle_lost` ends it or another
claim takes it over (genq.store.jobs.JobStore.claim). None of this changes a job's status except through JobStore's
compare-and-set transitions.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update

from genq.ids import is_id
from genq.lifecycle import ATTEMPTS_EXHAUSTED
from genq.status import JobStatus
from genq.store.db import rows_matched
from genq.store.jobs import JobStore, declared_lost
from genq.store.schema import Job, utcnow


class CancelOutcome(str, enum.Enum):
    CANCELED = "canceled"  # the job is canceled (now, or it already was)
    REQUESTED = "requested"  # it is running: its worker will stop it within a moment
    FINISHED = "finished"  # it had already ended otherwise (succeeded, failed, expired)
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class HeldState:
    """What a worker needs to know each poll about a job it holds."""

    status: str
    attempts: int
    cancel_requested: bool


def request_cancel(store: JobStore, job_id: str) -> tuple[CancelOutcome, Job | None]:
    """Cancel a job: a queued one at once; a running one by recording the request for its worker to act on
    (or at once, if its worker is lost). Idempotent. Returns the outcome and the job as it is now."""
    if not is_id(job_id):  # names no job (and PostgreSQL refuses some such strings, e.g. with NUL)
        return CancelOutcome.NOT_FOUND, None
    now = utcnow()
    if store.cancel(job_id, where=[Job.status == JobStatus.QUEUED.value]):
        return CancelOutcome.CANCELED, store.get(job_id)
    with store.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now, updated_at=now),
            execution_options={"synchronize_session": False},
        )
    # a running job whose worker was declared lost would wait for the sweeper: cancel it now
    store.cancel(job_id, where=[declared_lost(now)])
    job = store.get(job_id)
    if job is None:
        return CancelOutcome.NOT_FOUND, None
    if job.status == JobStatus.CANCELED.value:
        return CancelOutcome.CANCELED, job
    if job.status in JobStatus.TERMINAL:
        return CancelOutcome.FINISHED, job
    return CancelOutcome.REQUESTED, job  # running (nothing moves a job back to queued)


def renew_leases(store: JobStore, held: Iterable[tuple[str, int]], lease_seconds: float) -> set[tuple[str, int]]:
    """Extend the lease of each held job (job id, attempt) still running under that attempt, in one
    transaction; returns the pairs no longer held (finished, canceled, or taken over by another claim)."""
    # in id order, as the text-event writer locks its jobs: two transactions locking the same rows in
    # different orders deadlock (PostgreSQL then aborts one)
    pairs = sorted(held)
    if not pairs:
        return set()
    expires = utcnow() + timedelta(seconds=lease_seconds)
    stmt = (
        update(Job)
        .where(Job.id == bindparam("jid"), Job.attempts == bindparam("att"), Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=expires)
    )
    lost = set()
    with store.sessions.begin() as session:
        conn = session.connection()
        for job_id, attempt in pairs:
            if conn.execute(stmt, {"jid": job_id, "att": attempt}).rowcount != 1:
                lost.add((job_id, attempt))
    return lost


def held_states(store: JobStore, job_ids: Iterable[str]) -> dict[str, HeldState]:
    """Status, attempt and cancel request of each of `job_ids` (one query; missing jobs are left out)."""
    ids = list(job_ids)
    if not ids:
        return {}
    stmt = select(Job.id, Job.status, Job.attempts, Job.cancel_requested_at).where(Job.id.in_(ids))
    with store.sessions() as session:
        return {
            row.id: HeldState(row.status, row.attempts, row.cancel_requested_at is not None)
            for row in session.execute(stmt)
        }


def settle_lost(store: JobStore, job: Job, now: datetime | None = None) -> str | None:
    """End a running job whose worker is lost if no claim may take it over: canceled if a cancel was asked
    for, failed `attempts_exhausted` if it has no attempts left. Returns the status it got, or None.

    The caller has established the loss (a sweeper's confirmation, or `declared_lost`); the change is made
    only if the lease is still the one `job` shows, so a lease renewed meanwhile keeps the job running.
    """
    now = now or utcnow()
    lost = [Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now, Job.attempts == job.attempts,
            Job.lease_expires_at == job.lease_expires_at]
    if job.cancel_requested_at is not None:
        return JobStatus.CANCELED.value if store.cancel(job.id, where=lost) else None
    if job.attempts >= job.max_attempts:
        message = (f"the worker running attempt {job.attempts} of {job.max_attempts} was lost "
                   f"(its lease expired); no attempts are left")
        if store.transition(job.id, JobStatus.FAILED, where=lost, error_code=ATTEMPTS_EXHAUSTED,
                            error_message=message):
            return JobStatus.FAILED.value
    return None


def settle_unclaimable(store: JobStore, job_id: str) -> str | None:
    """After a refused claim, end the job if that is why: expired past its TTL, or lost with no way to go on.
    Returns the status it got, or None (the job is someone else's, or already finished)."""
    job = store.get(job_id)
    if job is None:
        return None
    now = utcnow()
    if job.status == JobStatus.QUEUED.value and job.expires_at is not None and job.expires_at <= now:
        return JobStatus.EXPIRED.value if store.expire(job_id) else None
    if (job.status == JobStatus.RUNNING.value and job.lease_expires_at is not None and job.lease_expires_at < now
            and job.published_at is not None and job.published_at > job.lease_expires_at):  # declared_lost
        return settle_lost(store, job, now)
    return None


def hand_back(store: JobStore, job_id: str, attempt: int, now: datetime | None = None) -> bool:
    """Give a running job back to the queue (a worker stopping before it finished): end its lease now and mark
    its worker declared lost (`published_at` after the lease's end; the caller then publishes the id), so the
    next claim takes it over at once, attempts + 1. Only under this attempt, still running; whether it was."""
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.attempts == attempt, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=now - timedelta(milliseconds=1), published_at=now)
    )
    with store.sessions.begin() as session:
        return rows_matched(session.execute(stmt, execution_options={"synchronize_session": False})) == 1
