"""The worker registry: each worker process registers itself and beats (workers/heartbeat.py); the dashboard
reads it. A worker whose last beat is older than LOST_AFTER is shown as lost."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.store.schema import Job, WorkerProcess, utcnow

BEAT_INTERVAL = timedelta(seconds=5)
LOST_AFTER = timedelta(seconds=20)
SHOWN_FOR = timedelta(days=1)  # stopped or lost workers stay listed this long
TOKENS_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True)
class Beat:
    in_batch: int
    tokens_per_s: float


def register(sessions: sessionmaker[Session], *, worker_id: str, host: str, pid: int, models: list[str],
             info: dict[str, Any], batch_limit: int) -> None:
    now = utcnow()
    with sessions.begin() as session:
        row = session.get(WorkerProcess, worker_id)
        if row is None:
            session.add(WorkerProcess(id=worker_id, host=host, pid=pid, models=models, info=info,
                                      batch_limit=batch_limit, started_at=now, heartbeat_at=now))
        else:
            row.models, row.info, row.batch_limit = models, info, batch_limit
            row.started_at, row.heartbeat_at, row.stopped_at = now, now, None


def beat(sessions: sessionmaker[Session], worker_id: str, in_batch: int, *, info: dict[str, Any] | None = None,
         stopped: bool = False) -> None:
    """Record a heartbeat with the batch occupancy and the generated tokens per second of the last minute
    (from the jobs this worker finished in it: ix_jobs_worker_started bounds the scan)."""
    now = utcnow()
    with sessions.begin() as session:
        tokens = session.scalar(select(func.coalesce(func.sum(Job.completion_tokens), 0)).where(
            Job.worker_id == worker_id, Job.started_at >= now - timedelta(hours=1),
            Job.completed_at >= now - TOKENS_WINDOW))
        values: dict[str, Any] = {"heartbeat_at": now, "in_batch": in_batch,
                                  "tokens_per_s": float(tokens or 0) / TOKENS_WINDOW.total_seconds()}
        if info is not None:
            values["info"] = info
        if stopped:
            values["stopped_at"] = now
        session.execute(update(WorkerProcess).where(WorkerProcess.id == worker_id).values(**values))


@dataclass(frozen=True)
class WorkerView:
    row: WorkerProcess
    state: str  # "up" | "lost" | "stopped"


def list_workers(sessions: sessionmaker[Session], now: datetime | None = None) -> list[WorkerView]:
    now = now or utcnow()
    with sessions() as session:
        rows = list(session.scalars(select(WorkerProcess).where(WorkerProcess.heartbeat_at >= now - SHOWN_FOR)
                                    .order_by(WorkerProcess.started_at.desc()).limit(500)))
    out = []
    for row in rows:
        state = "stopped" if row.stopped_at is not None else "lost" if row.heartbeat_at < now - LOST_AFTER else "up"
        out.append(WorkerView(row, state))
    return out


def get_worker(sessions: sessionmaker[Session], worker_id: str) -> WorkerProcess | None:
    with sessions() as session:
        return session.get(WorkerProcess, worker_id)


def jobs_of(sessions: sessionmaker[Session], worker_id: str, limit: int = 50) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job).where(Job.worker_id == worker_id)
                                    .order_by(Job.started_at.desc()).limit(limit)))


@dataclass(frozen=True)
class FinishedJob:
    model: str
    status: str
    queue_wait_s: float | None
    run_s: float | None
    prompt_tokens: int
    completion_tokens: int


def finished_since(sessions: sessionmaker[Session], worker_id: str, since: datetime, until: datetime
                   ) -> list[FinishedJob]:
    """The jobs whose last attempt ran on this worker and ended in (since, until] (its metrics observe them)."""
    stmt = select(Job.model, Job.status, Job.created_at, Job.started_at, Job.completed_at, Job.prompt_tokens,
                  Job.completion_tokens).where(
        Job.worker_id == worker_id, Job.started_at >= since - timedelta(days=1),
        Job.completed_at > since, Job.completed_at <= until)
    with sessions() as session:
        rows = session.execute(stmt).all()
    return [FinishedJob(r.model, r.status,
                        (r.started_at - r.created_at).total_seconds() if r.started_at else None,
                        (r.completed_at - r.started_at).total_seconds() if r.started_at and r.completed_at else None,
                        r.prompt_tokens or 0, r.completion_tokens or 0) for r in rows]
