"""The sweeper: puts right what lost messages and lost workers leave behind. Safe to run anywhere, any
number of times at once (every worker process runs one; `genq sweep` runs it by hand or on a timer):
every change it makes is a compare-and-set, so two sweepers racing change each job at most once.

Each sweep:
1. expires queued jobs whose `ttl_seconds` ran out (queued → expired);
2. ends running jobs whose worker was lost (lease expired) if no claim may take them over: a cancel was
   asked for (→ canceled) or no attempts are left (→ failed `attempts_exhausted`); re-publishes the others,
   so that a worker claims them again (the claim takes over a lost worker's job, attempts + 1). The
   `JobSweeper` thread counts a worker lost only once it has seen the job's lease expired and unrenewed for
   `confirm_lost` seconds (genq/store/lost_leases.py), so the workers still holding jobs through a database outage
   keep them; a one-off `sweep()` without `lost` acts on every expired lease it finds;
3. publishes queued jobs that have no message yet (the broker refused it at submission and the API's
   relay did not send it, genq/relay.py), and re-publishes queued jobs whose message may be lost (a broker
   flush or restart, a worker killed after taking a message from a broker that does not redeliver): queued
   for `republish_after` seconds since their last publication, then at doubling intervals
   (genq.lifecycle.republish_due). A duplicate message is harmless: the claim lets exactly one run the job;
4. forgets idempotency keys past their retention.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from genq.broker import Publisher, PublishError
from genq.lifecycle import republish_due
from genq.relay import publish_job
from genq.status import JobStatus
from genq.store.db_errors import is_unavailable
from genq.store.db_retry import OutageLog
from genq.store.idempotency import delete_expired_keys
from genq.store.jobs import JobStore
from genq.store.leases import settle_lost
from genq.store.lost_leases import LostLeases
from genq.store.schema import Job, utcnow

log = logging.getLogger(__name__)

BATCH = 500  # jobs looked at per step and sweep: a huge backlog is worked through over several sweeps


@dataclass
class SweepReport:
    expired: int = 0
    settled: int = 0  # lost running jobs ended (canceled, attempts_exhausted)
    republished: int = 0
    keys_deleted: int = 0

    def __bool__(self) -> bool:
        return any((self.expired, self.settled, self.republished, self.keys_deleted))


def sweep(store: JobStore, publisher: Publisher, republish_after: float, now: datetime | None = None,
          lost_leases: LostLeases | None = None) -> SweepReport:
    """One sweep over the database (see the module docstring); returns what it changed.

    `lost_leases`: this sweeper's record of expired leases; only those it confirms count as lost workers.
    """
    now = now or utcnow()
    report = SweepReport()

    with store.sessions() as session:
        expired_ids = list(session.scalars(
            select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.expires_at <= now).limit(BATCH)))
        lost_jobs = list(session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at).limit(BATCH)))
        waiting = list(session.scalars(
            select(Job).where(
                Job.status == JobStatus.QUEUED.value,
                or_(Job.published_at.is_(None), Job.published_at <= now - timedelta(seconds=republish_after)),
                or_(Job.expires_at.is_(None), Job.expires_at > now),
            ).order_by(Job.priority.desc(), Job.created_at).limit(BATCH)))

    for job_id in expired_ids:
        report.expired += store.expire(job_id)
    if lost_leases is not None:
        lost_jobs = lost_leases.confirmed(lost_jobs, now)
    for job in lost_jobs:
        if settle_lost(store, job, now) is not None:
            report.settled += 1
        elif job.cancel_requested_at is None and job.attempts < job.max_attempts and (
            job.published_at is None
            or (job.lease_expires_at is not None  # (it is: the query took jobs whose lease expired)
                and job.published_at < job.lease_expires_at)  # not yet re-published since its worker was lost
            or republish_due(now, job.created_at, job.published_at, republish_after)
        ):
            report.republished += _republish(store, publisher, job, now)
    for job in waiting:
        if republish_due(now, job.created_at, job.published_at, republish_after):
            report.republished += _republish(store, publisher, job, now)
    report.keys_deleted = delete_expired_keys(store, now)
    if report:
        log.info("sweep: %s", report)
    return report


def _republish(store: JobStore, publisher: Publisher, job: Job, now: datetime) -> bool:
    """Publish the job's id again if this sweeper wins the right to (genq.relay.publish_job)."""
    try:
        if not publish_job(store, publisher, job, now):
            return False
    except PublishError as e:  # the broker is down: the next sweep tries again (the publication was given back)
        log.warning("sweep: could not re-publish job %s: %s", job.id, e)
        return False
    log.info("sweep: re-published %s job %s (attempts %d)", job.status, job.id, job.attempts)
    return True


def confirm_lost_after(lease_seconds: float) -> float:
    """How long a sweeper watches an expired lease before it counts the worker lost: a live worker's keeper
    renews every lease/3, and at once when the database answers again (workers/lease_keeper.py)."""
    return max(2.0, lease_seconds / 3)


class JobSweeper:
    """Runs `sweep` every `interval` seconds (with jitter, so many workers do not sweep in step) on a
    daemon thread, until stopped. A failing sweep is logged and the next one goes ahead.

    It counts a worker lost after seeing its job's lease expired and unrenewed for `confirm_lost` seconds.
    """

    def __init__(self, store: JobStore, publisher: Publisher, interval: float, republish_after: float,
                 confirm_lost: float = 2.0):
        self._store, self._publisher = store, publisher
        self._interval, self._republish_after = interval, republish_after
        self._lost = LostLeases(confirm_lost)
        self._outage = OutageLog(log, "sweeper")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> JobSweeper:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="genq-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval * random.uniform(0.8, 1.2)):
            self.sweep_once()

    def sweep_once(self) -> SweepReport | None:
        """One sweep now; None if it failed (logged; what it had seen of expired leases is forgotten)."""
        try:
            report = sweep(self._store, self._publisher, self._republish_after, lost_leases=self._lost)
        except Exception as e:  # the database is away: try again next time
            self._lost.forget()
            if is_unavailable(e):
                self._outage.failed(e)
            else:
                log.exception("sweep failed")
            return None
        self._outage.recovered()
        return report
