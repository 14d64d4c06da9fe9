"""Batches: many jobs submitted as one JSONL file, created in one transaction, read back together.

A batch row holds only what its jobs cannot tell: total and metadata. Its status and counts are computed
from its jobs (`jobs.batch_id`), so no worker has to update a batch and a count cannot drift.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from genq.ids import is_id
from genq.status import JobStatus
from genq.store.job_events import status_event
from genq.store.quotas import Reservation, reserve
from genq.store.schema import Batch, Job, utcnow

# Every status a count is reported for (a batch object always shows them all, zeros included).
COUNTED_STATUSES = tuple(s.value for s in JobStatus)


@dataclass(frozen=True)
class BatchView:
    batch: Batch
    counts: dict[str, int]  # "total" and one per COUNTED_STATUSES
    completed_at: datetime | None  # when its last job finished, once all have

    @property
    def status(self) -> str:
        return "completed" if self.completed_at is not None or self.counts["total"] == 0 else "in_progress"


class BatchStore:
    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def create(self, batch_id: str, jobs: Sequence[Job], metadata: Mapping[str, Any] | None,
               also: Sequence[object] = (), owner: str | None = None,
               reservation: Reservation | None = None) -> Batch:
        """Insert the batch, its jobs (built by JobStore.build with this batch_id) and their first events,
        all in one transaction: either every job exists or none does. `also`: more rows that belong to the batch
        (e.g. its OpenAI record), inserted in the same transaction. `reservation` (of the key's quotas, for all
        the jobs) is made last in it, the rows written: if it raises QuotaExceeded, nothing is inserted."""
        batch = Batch(id=batch_id, total=len(jobs), created_at=utcnow(),
                      client_metadata=dict(metadata) if metadata is not None else None, owner=owner)
        with self._sessions.begin() as session:
            session.add(batch)
            session.flush()
            session.add_all(jobs)
            session.flush()
            session.add_all([status_event(job) for job in jobs])
            session.add_all(also)
            if reservation is not None:
                session.flush()
                reserve(session, reservation.quota, reservation.jobs, reservation.tokens)
        return batch

    def view(self, batch_id: str, owner: str | None = None) -> BatchView | None:
        """The batch with its counts by status, or None (a malformed id is simply not found). Given `owner`
        (an API key's id), only a batch of that key is found."""
        if not is_id(batch_id):
            return None
        with self._sessions() as session:
            batch = session.get(Batch, batch_id)
            if batch is None or (owner is not None and batch.owner != owner):
                return None
            rows = session.execute(
                select(Job.status, func.count(), func.max(Job.completed_at))
                .where(Job.batch_id == batch_id).group_by(Job.status)
            ).all()
        counts = {"total": 0, **{s: 0 for s in COUNTED_STATUSES}}
        live, last = 0, None
        for status, n, completed in rows:
            counts[status] = counts.get(status, 0) + n
            counts["total"] += n
            if status in JobStatus.LIVE:
                live += n
            elif completed is not None and (last is None or completed > last):
                last = completed
        return BatchView(batch, counts, last if live == 0 and counts["total"] else None)

    def jobs(self, batch_id: str, after_line: int = 0, limit: int = 200) -> list[Job]:
        """The batch's jobs in line order, from after line `after_line`, at most `limit`."""
        with self._sessions() as session:
            return list(session.scalars(
                select(Job).where(Job.batch_id == batch_id, Job.batch_line > after_line)
                .order_by(Job.batch_line).limit(limit)
            ))
