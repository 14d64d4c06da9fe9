"""The per-job event log (`job_events`): status changes and generated text, numbered 1, 2, ... per job.

Writers allocate `seq` by incrementing `jobs.event_seq` in an UPDATE of the job row, in the same transaction
as the event's INSERT. The row lock that UPDATE takes (PostgreSQL; SQLite has one writer at a time) orders
the writers of one job, so events commit in `seq` order: a reader polling `seq > last` never skips one.
The state machine writes status events (genq.store.jobs); the worker's DeltaSink writes text (genq.store.delta_sink).

A `running` event carries the attempt it starts. One with attempt > 1 is a takeover (the previous attempt's
worker was lost): its text starts over, so the stream presents it as a restart (`is_restart`), and a delta
is written only while its attempt still holds the job, so no late text of an old attempt follows the restart.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from genq.store.schema import Job, JobEvent


def status_event(job: Job) -> JobEvent:
    """The log entry for the status `job` has just entered; `job.event_seq` must already count it."""
    data: dict[str, Any] = {"status": job.status}
    if job.status == "running":
        data["attempt"] = job.attempts
    return JobEvent(job_id=job.id, seq=job.event_seq, kind="status", data=data, created_at=job.updated_at)


def is_restart(event: JobEvent) -> bool:
    """Whether `event` starts a new attempt after another: the text so far is void, the next deltas restart it."""
    return event.kind == "status" and event.data.get("status") == "running" and event.data.get("attempt", 1) > 1


def read_events_of_jobs(session: Session, after: Mapping[str, int], limit: int = 500) -> list[JobEvent]:
    """For each job of `after`, its events with seq > after[job], oldest first, at most `limit` a job: one
    query (a UNION ALL of per-job index range scans), so a job with a long backlog does not starve the rest."""
    branches = [
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > seq).order_by(JobEvent.seq).limit(limit)
        .subquery().select()  # wrapped: SQLite takes no ORDER BY / LIMIT on a bare UNION member
        for job_id, seq in sorted(after.items())
    ]
    if not branches:
        return []
    stmt = branches[0] if len(branches) == 1 else union_all(*branches)
    events = session.scalars(select(JobEvent).from_statement(stmt))
    return sorted(events, key=lambda e: (e.job_id, e.seq))  # a UNION promises no order

