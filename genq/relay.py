"""The publish relay: the jobs table is the broker's outbox.

A job is committed before its message exists. `published_at` is the job's publication marker: set when the
job is recorded (its message follows at once, genq.submit) and whenever a message is sent again; NULL while a
queued job has no message the broker accepted. If the broker refuses (Redis down or restarting), the job stays
`queued` with `published_at` NULL, the client still gets its 202, and the relay publishes it once the broker
answers: a thread in the API process, woken by that refusal, that tries every `interval` seconds until no
unpublished job is left. The workers' sweepers (genq/sweeper.py) publish unpublished jobs too, so jobs left by
an API process that died are not stranded.

Any number of relays and sweepers may run at once: each publication is first won by a compare-and-set on the
job's `published_at` (`publish_job`), so one of them sends it; and a duplicate message is harmless anyway, since
a worker's claim is a compare-and-set and lets exactly one run the job. A publication the broker refuses is
given back (the marker set back to what it was), so the next round tries again at once rather than after the
sweeper's re-publication back-off.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from genq.broker import Publisher, PublishError
from genq.status import JobStatus
from genq.store.db import rows_matched
from genq.store.db_errors import is_unavailable
from genq.store.db_retry import OutageLog
from genq.store.jobs import JobStore
from genq.store.schema import Job, utcnow

log = logging.getLogger(__name__)

BATCH = 500  # unpublished jobs looked at per round
DEFAULT_INTERVAL_S = 1.0


def publish_job(store: JobStore, publisher: Publisher, job: Job, now: datetime) -> bool:
    """Publish `job` (as it was read) if this caller wins the right to: a compare-and-set of `published_at`
    from the value read to `now`, on the job's status, attempts and lease as read. Returns whether it was sent;
    a message the broker refused is given back (`published_at` set back) so that the next try may go at once."""
    same_publication = Job.published_at.is_(None) if job.published_at is None else Job.published_at == job.published_at
    # a running job's lease unchanged since it was seen lost: one renewed meanwhile has its worker back
    same_lease = [Job.lease_expires_at == job.lease_expires_at] if job.lease_expires_at is not None else []
    stmt = (
        update(Job)
        .where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts, same_publication,
               *same_lease)
        .values(published_at=now)
    )
    with store.sessions.begin() as session:
        if rows_matched(session.execute(stmt, execution_options={"synchronize_session": False})) != 1:
            return False
    try:
        publisher.publish(job.id, job.model, job.priority)
    except PublishError:
        with store.sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job.id, Job.published_at == now)
                            .values(published_at=job.published_at),
                            execution_options={"synchronize_session": False})
        raise
    return True


def mark_unpublished(store: JobStore, job_ids: Sequence[str]) -> None:
    """Record that the queued jobs `job_ids` have no message yet (the broker refused it): the relay's work."""
    if not job_ids:
        return
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id.in_(list(job_ids)), Job.status == JobStatus.QUEUED.value)
                        .values(published_at=None), execution_options={"synchronize_session": False})


def publish_unpublished(store: JobStore, publisher: Publisher, limit: int = BATCH) -> tuple[int, bool]:
    """One round: publish the queued jobs without a message, highest priority then oldest first, until the
    broker refuses one. Returns (how many this round sent, whether any may be left)."""
    with store.sessions() as session:
        jobs = list(session.scalars(
            select(Job).where(Job.status == JobStatus.QUEUED.value, Job.published_at.is_(None))
            .order_by(Job.priority.desc(), Job.created_at).limit(limit)))
    sent = 0
    for job in jobs:
        try:
            sent += publish_job(store, publisher, job, utcnow())
        except PublishError as e:
            log.warning("relay: the broker refused job %s (%s); trying again shortly", job.id, e)
            return sent, True
    return sent, len(jobs) == limit


class PublishRelay:
    """Publishes this process's unpublished jobs once the broker answers: a daemon thread, started by the
    first `wake()`, that runs rounds every `interval` seconds while jobs are left, then sleeps until woken."""

    def __init__(self, store: JobStore, publisher: Publisher, interval: float = DEFAULT_INTERVAL_S):
        self._store, self._publisher, self._interval = store, publisher, interval
        self._wake, self._stop = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._outage = OutageLog(log, "publish relay")
        self.pending = False  # jobs refused and not yet sent: the submit path then leaves new ones to the relay

    def wake(self) -> None:
        """Jobs were left unpublished: publish them as soon as the broker takes them."""
        self.pending = True
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="genq-publish-relay", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set():
                if not self._round():
                    break
                self._stop.wait(self._interval)

    def _round(self) -> bool:
        """One round; whether another should follow."""
        try:
            sent, left = publish_unpublished(self._store, self._publisher)
        except Exception as e:  # the database is away (or a bug): try again next round
            if is_unavailable(e):
                self._outage.failed(e)
            else:
                log.exception("relay round failed")
            return True
        self._outage.recovered()
        if sent:
            log.info("relay: published %d job(s) the broker had refused", sent)
        self.pending = left
        return left
