"""Webhook deliveries and their attempts in the database: the outbox, claims, attempts, redelivery, the sweep.

A delivery is created by `create_deliveries` inside the transaction of the status change that fires it, so a
committed change always has its delivery, whatever the broker does. A broker message carries only its id.
Whoever runs an attempt first claims the delivery with a compare-and-set that leases it, so duplicate
messages (a sweep republishing, a broker redelivering) never send a message twice at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.ids import is_id, new_id
from genq.serialize import job_to_dict
from genq.store.db import rows_matched
from genq.store.schema import Job, WebhookAttempt, WebhookDelivery, utcnow
from genq.webhooks import Attempt, events_for_status, message_id
from genq.webhooks.events import DEFAULT_EVENTS_FILTER

PENDING, SUCCEEDED, FAILED, GONE = "pending", "succeeded", "failed", "gone"
_STATUS_AFTER = {"succeeded": SUCCEEDED, "retry": PENDING, "failed": FAILED, "gone": GONE}
DEFAULT_LEASE_S = 60.0  # longer than one attempt can take (deliver's connect + read timeouts)


def create_deliveries(session: Session, job: Job) -> list[str]:
    """In the caller's transaction: the deliveries `job`'s new status fires (ids; none without a webhook).

    A receiver that answered 410 Gone for this job's URL gets nothing more for the job.
    """
    if not job.webhook:
        return []
    events = events_for_status(job.status, tuple(job.webhook_events_filter or DEFAULT_EVENTS_FILTER))
    if not events:
        return []
    gone = session.scalar(select(exists().where(
        WebhookDelivery.job_id == job.id, WebhookDelivery.url == job.webhook, WebhookDelivery.status == GONE
    )))
    if gone:
        return []
    now = utcnow()
    payload = job_to_dict(job)
    ids = []
    for event in events:
        delivery = WebhookDelivery(
            id=new_id(), job_id=job.id, event=event, webhook_id=message_id(job.id, event, job.retries),
            url=job.webhook,
            payload=payload, status=PENDING, attempt_count=0, next_attempt_at=now, dispatched_at=now,
            created_at=now, updated_at=now,
        )
        session.add(delivery)
        ids.append(delivery.id)
    return ids


@dataclass
class DeliveryRecord:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


class RedeliverRefused(Exception):
    """The delivery cannot be redelivered now; `code` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class DeliveryStore:
    """Deliveries and attempts. Methods run their own short transactions and are thread-safe."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def get(self, delivery_id: str) -> WebhookDelivery | None:
        if not is_id(delivery_id):
            return None
        with self._sessions() as session:
            return session.get(WebhookDelivery, delivery_id)

    def owner(self, delivery: WebhookDelivery) -> str | None:
        """Whose delivery it is: its job's owner (an API key's id; None: the open API's). It signs with theirs."""
        with self._sessions() as session:
            return session.scalar(select(Job.owner).where(Job.id == delivery.job_id))

    def for_job(self, job_id: str) -> list[DeliveryRecord]:
        """The job's deliveries, oldest first, each with its attempts in order."""
        with self._sessions() as session:
            deliveries = list(session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
            ))
            attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
            if deliveries:
                for a in session.scalars(
                    select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                    .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number, WebhookAttempt.id)
                ):
                    attempts[a.delivery_id].append(a)
        return [DeliveryRecord(d, attempts[d.id]) for d in deliveries]

    def claim(self, delivery_id: str, lease_s: float = DEFAULT_LEASE_S) -> WebhookDelivery | None:
        """Lease a pending, due, unleased delivery for one attempt; None if it is not that now."""
        now = utcnow()
        stmt = (
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, _attemptable(now))
            .values(locked_until=now + timedelta(seconds=lease_s), updated_at=now)
        )
        with self._sessions.begin() as session:
            if rows_matched(session.execute(stmt, execution_options={"synchronize_session": False})) != 1:
                return None
            return session.get(WebhookDelivery, delivery_id)

    def record_attempt(self, delivery_id: str, attempt: Attempt, redispatch_at: datetime | None) -> None:
        """Store `attempt` and move the delivery on: done, or pending until `attempt.next_retry_at`.

        `redispatch_at`: when the caller has already published the next attempt's message (None: the sweep
        will publish it when due). A 410 also ends the job's other pending deliveries to the same URL.
        """
        now = utcnow()
        status = _STATUS_AFTER[attempt.outcome]
        with self._sessions.begin() as session:
            session.add(WebhookAttempt(
                delivery_id=delivery_id, number=attempt.number, started_at=attempt.started_at,
                outcome=attempt.outcome, status_code=attempt.status_code, error=attempt.error,
                duration_s=attempt.duration_s, response_excerpt=attempt.response_excerpt,
                next_retry_at=attempt.next_retry_at,
            ))
            session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
                    status=status, attempt_count=attempt.number, locked_until=None, updated_at=now,
                    next_attempt_at=attempt.next_retry_at if status == PENDING else None,
                    dispatched_at=redispatch_at if status == PENDING else None,
                ),
                execution_options={"synchronize_session": False},
            )
            if status == GONE:
                delivery = session.get(WebhookDelivery, delivery_id)
                if delivery is not None:
                    session.execute(
                        update(WebhookDelivery).where(
                            WebhookDelivery.job_id == delivery.job_id, WebhookDelivery.url == delivery.url,
                            WebhookDelivery.status == PENDING, WebhookDelivery.id != delivery_id,
                        ).values(status=GONE, next_attempt_at=None, updated_at=now),
                        execution_options={"synchronize_session": False},
                    )

    def redeliver(self, job_id: str, delivery_id: str) -> WebhookDelivery:
        """A new delivery of the same message (same `webhook-id` and body), due now, with a fresh schedule.

        Raises KeyError if the job has no such delivery, RedeliverRefused while that message is still pending.
        """
        if not is_id(delivery_id):
            raise KeyError(delivery_id)
        now = utcnow()
        with self._sessions.begin() as session:
            original = session.get(WebhookDelivery, delivery_id)
            if original is None or original.job_id != job_id:
                raise KeyError(delivery_id)
            pending = session.scalar(select(exists().where(
                WebhookDelivery.job_id == job_id, WebhookDelivery.webhook_id == original.webhook_id,
                WebhookDelivery.status == PENDING,
            )))
            if pending:
                raise RedeliverRefused("delivery_pending", "this message is still being delivered; wait for it")
            copy = WebhookDelivery(
                id=new_id(), job_id=job_id, event=original.event, webhook_id=original.webhook_id,
                url=original.url, payload=original.payload, status=PENDING, attempt_count=0, next_attempt_at=now,
                dispatched_at=now, redelivery_of=original.id, created_at=now, updated_at=now,
            )
            session.add(copy)
        return copy

    def mark_dispatch_due(self, now: datetime | None = None, redispatch_after_s: float = 30.0,
                          limit: int = 200) -> list[str]:
        """Deliveries due for an attempt that no broker message is known to carry: marks them dispatched now
        and returns their ids for the caller to publish (the sweep)."""
        now = now or utcnow()
        due = and_(
            _attemptable(now),
            or_(WebhookDelivery.dispatched_at.is_(None),
                WebhookDelivery.dispatched_at < now - timedelta(seconds=redispatch_after_s)),
        )
        with self._sessions.begin() as session:
            ids = list(session.scalars(
                select(WebhookDelivery.id).where(due).order_by(WebhookDelivery.next_attempt_at).limit(limit)
            ))
            if not ids:
                return []
            return list(session.scalars(
                update(WebhookDelivery).where(WebhookDelivery.id.in_(ids), due)
                .values(dispatched_at=now).returning(WebhookDelivery.id),
                execution_options={"synchronize_session": False},
            ))


def _attemptable(now: datetime) -> ColumnElement[bool]:
    """Pending, due, and not leased by an attempt in flight."""
    return and_(
        WebhookDelivery.status == PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
    )
