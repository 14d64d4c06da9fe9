"""A worker asked to stop (SIGTERM, Celery's warm shutdown): its running jobs finish, or go back to the queue,
within a bounded time, never both.

Celery stops taking messages and waits for its running tasks. This lets them run for `GENQ_SHUTDOWN_GRACE`
seconds; then every job still held is handed back: its lease ended and its worker declared lost in one
compare-and-set under the claim's attempt (genq.store.leases.hand_back), its engine request stopped as a lost
claim (so its task stores nothing and returns), and its id published again, so another worker's claim takes
it over at once. A job whose result was stored first is simply not handed back (the compare-and-set finds it
finished), and one handed back cannot store a result any more once another claim took it over; so each job
ends with one result. With the database away the hand-back cannot be written: the job is stopped all the same
(so the worker still exits in bounded time) and returns to the queue when its lease, no longer renewed, runs
out. A handed-back job has used an attempt: on its last one, the next claim fails it
`attempts_exhausted`.
"""
from __future__ import annotations

import logging
import threading

from genq.broker import Publisher
from genq.store.jobs import JobStore
from genq.store.leases import hand_back
from workers.lease_keeper import STOP_LOST, LeaseKeeper

log = logging.getLogger(__name__)


class GracefulStop:
    """Hands the held jobs back `grace` seconds after `begin()` (once), on a daemon thread."""

    def __init__(self, keeper: LeaseKeeper, store: JobStore, publisher: Publisher, grace: float):
        self._keeper, self._store, self._publisher, self._grace = keeper, store, publisher, grace
        self._started = False
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        log.info("stopping: running jobs have %gs to finish before they are handed back", self._grace)
        threading.Thread(target=self._after_grace, name="genq-graceful-stop", daemon=True).start()

    def _after_grace(self) -> None:
        if not self._keeper.wait_idle(self._grace):
            self.hand_back_all()

    def hand_back_all(self) -> int:
        """Hand back every job still held now; returns how many were."""
        self._keeper.stop()  # no renewal may follow a hand-back (it would give the lease back to this worker)
        count = 0
        for h in self._keeper.held():
            job_id, attempt = h.key
            try:
                if not hand_back(self._store, job_id, attempt):
                    continue  # finished (or taken over) meanwhile: its result stands
            except Exception as e:  # the database is away: stop all the same, within the bound; its lease
                # (no longer renewed) runs out and a sweeper has another worker take the job over
                log.warning("stopping: job %s (attempt %d) dropped; the database did not answer (%s), so it "
                            "returns to the queue when its lease runs out", job_id, attempt, e)
                h.stop(STOP_LOST)
                continue
            h.stop(STOP_LOST)
            count += 1
            log.info("stopping: job %s (attempt %d) handed back to the queue", job_id, attempt)
            try:
                job = self._store.get(job_id)
                if job is not None:
                    self._publisher.publish(job.id, job.model, job.priority)
            except Exception as e:  # PublishError, or the database away: the sweeper re-publishes it
                log.warning("stopping: job %s handed back but not re-published: %s", job_id, e)
        return count
