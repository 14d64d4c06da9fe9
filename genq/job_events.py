"""The per-job event log (`job_events`): status changes and generated text, numbered 1, 2, ... per job.

Writers allocate `seq` by incrementing `jobs.event_seq` in an UPDATE of the job row, in the same transaction
as the event's INSERT. The row lock that UPDATE takes (PostgreSQL; SQLite has one writer at a time) orders
the writers of one job, so events commit in `seq` order: a reader polling `seq > last` never skips one.
The state machine writes status events (genq.jobs); the worker's DeltaSink writes text (genq.delta_sink).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from genq.schema import Job
from genq.schema_events import JobEvent

# Statuses a job can still leave. Every other status is final (succeeded, failed, canceled, and any a later
# migration adds, such as expired), so the stream of a job ends at it.
LIVE_STATUSES = frozenset({"queued", "running"})


def is_final_status(status: str) -> bool:
    """Whether a job in `status` will change no more."""
    return status not in LIVE_STATUSES


def status_event(job: Job) -> JobEvent:
    """The log entry for the status `job` has just entered; `job.event_seq` must already count it."""
    return JobEvent(
        job_id=job.id, seq=job.event_seq, kind="status", data={"status": job.status}, created_at=job.updated_at
    )


def read_events(session: Session, job_id: str, after: int, limit: int = 500) -> list[JobEvent]:
    """The job's events with seq > `after`, oldest first, at most `limit`."""
    stmt = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.seq > after)
        .order_by(JobEvent.seq)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def event_data(event: JobEvent) -> dict[str, Any]:
    """What a client is sent for one event (the stored data, plus when it happened)."""
    from genq.serialize import iso

    return {**event.data, "at": iso(event.created_at)}
