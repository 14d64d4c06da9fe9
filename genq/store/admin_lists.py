"""The dashboard's lists beyond jobs: batches (newest first) and failing webhook deliveries (in retry, or
given up), each one index range scan with a bound and an id cursor."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from genq.status import JobStatus
from genq.store.batches import COUNTED_STATUSES, BatchView
from genq.store.schema import Batch, Job, WebhookAttempt, WebhookDelivery

FAILING_KINDS = {"retrying": ("pending",), "failed": ("failed",), "gone": ("gone",)}


def batches_page(sessions: sessionmaker[Session], limit: int, before: tuple[datetime, str] | None = None
                 ) -> list[Batch]:
    stmt = select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(or_(Batch.created_at < before[0], and_(Batch.created_at == before[0], Batch.id < before[1])))
    with sessions() as session:
        return list(session.scalars(stmt))


def batch_views(sessions: sessionmaker[Session], batches: list[Batch]) -> list[BatchView]:
    """The batches with their counts by status: one grouped query for the whole page (ix_jobs_batch_line)."""
    ids = [b.id for b in batches]
    rows: list[Any] = []
    if ids:
        with sessions() as session:
            rows = list(session.execute(
                select(Job.batch_id, Job.status, func.count(), func.max(Job.completed_at))
                .where(Job.batch_id.in_(ids)).group_by(Job.batch_id, Job.status)))
    out = []
    for batch in batches:
        counts = {"total": 0, **{s: 0 for s in COUNTED_STATUSES}}
        live, last = 0, None
        for batch_id, status, n, completed in rows:
            if batch_id != batch.id:
                continue
            counts[status] += n
            counts["total"] += n
            if status in JobStatus.LIVE:
                live += n
            elif completed is not None and (last is None or completed > last):
                last = completed
        out.append(BatchView(batch, counts, last if live == 0 and counts["total"] else None))
    return out


def failing_deliveries(sessions: sessionmaker[Session], kind: str, limit: int) -> list[WebhookDelivery]:
    """Deliveries in retry (pending after a failed attempt), failed (retries exhausted) or gone (410),
    the most recently changed first."""
    stmt = (select(WebhookDelivery).where(WebhookDelivery.status.in_(FAILING_KINDS[kind]))
            .order_by(WebhookDelivery.updated_at.desc()).limit(limit))
    if kind == "retrying":
        stmt = stmt.where(WebhookDelivery.attempt_count > 0)
    with sessions() as session:
        return list(session.scalars(stmt))


def last_attempts(sessions: sessionmaker[Session], delivery_ids: list[str]) -> dict[str, WebhookAttempt]:
    if not delivery_ids:
        return {}
    out: dict[str, WebhookAttempt] = {}
    with sessions() as session:
        for a in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
                                 .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)):
            out[a.delivery_id] = a
    return out


def deliveries_by_status(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Webhook deliveries by status (an index-only scan of ix_webhook_deliveries_status_next)."""
    with sessions() as session:
        rows = session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all()
    return {status: int(n) for status, n in rows}
