"""Model queues as an operator sees them: paused or not, depth and oldest waiting job, pause, resume, purge.

A paused model's queued jobs stay queued, in their place (priority, then age): workers' claims refuse them
(genq.store.jobs.queue_paused) and the messages that arrive meanwhile are dropped, so resuming re-publishes
the model's queued jobs in queue order (the caller does, with what `queued_in_order` returns).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from genq.status import JobStatus
from genq.store.db import rows_matched
from genq.store.jobs import JobStore
from genq.store.schema import Job, PausedQueue, utcnow

PURGE_LIMIT = 10_000  # jobs one purge cancels (run it again for more)
PURGE_CODE = "purged"


@dataclass(frozen=True)
class QueueState:
    model: str
    depth: int
    oldest_created_at: datetime | None
    paused_at: datetime | None
    paused_by: str | None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


def paused_models(sessions: sessionmaker[Session]) -> dict[str, PausedQueue]:
    with sessions() as session:
        return {p.model: p for p in session.scalars(select(PausedQueue))}


def oldest_queued(sessions: sessionmaker[Session], models: list[str]) -> dict[str, datetime]:
    """Each model's oldest queued job's creation time: one lookup per model on the partial index of queued jobs."""
    out: dict[str, datetime] = {}
    with sessions() as session:
        for model in models:
            oldest = session.scalar(select(func.min(Job.created_at))
                                    .where(Job.model == model, Job.status == JobStatus.QUEUED.value))
            if oldest is not None:
                out[model] = oldest
    return out


def pause(sessions: sessionmaker[Session], model: str, by: str) -> bool:
    """True if it was not paused before."""
    with sessions.begin() as session:
        if session.get(PausedQueue, model) is not None:
            return False
        session.add(PausedQueue(model=model, paused_at=utcnow(), paused_by=by))
        return True


def resume(sessions: sessionmaker[Session], model: str) -> bool:
    """True if it was paused."""
    with sessions.begin() as session:
        return rows_matched(session.execute(delete(PausedQueue).where(PausedQueue.model == model))) > 0


def queued_in_order(sessions: sessionmaker[Session], model: str, limit: int = 100_000) -> list[tuple[str, int]]:
    """The model's queued jobs (id, priority) in the order workers should take them."""
    stmt = (select(Job.id, Job.priority).where(Job.model == model, Job.status == JobStatus.QUEUED.value)
            .order_by(Job.priority.desc(), Job.created_at, Job.id).limit(limit))
    with sessions() as session:
        return [(r.id, r.priority) for r in session.execute(stmt)]


def purge(store: JobStore, model: str, limit: int = PURGE_LIMIT) -> int:
    """Cancel the model's waiting (queued) jobs, each through the state machine (its event, its webhooks);
    returns how many were canceled."""
    ids = [job_id for job_id, _ in queued_in_order(store.sessions, model, limit)]
    done = 0
    for job_id in ids:
        if store.transition(job_id, JobStatus.CANCELED, where=[Job.status == JobStatus.QUEUED.value],
                            error_code=PURGE_CODE, error_message="purged from its queue by an operator"):
            done += 1
    return done
