"""Tables of the events half: the per-job event log, webhook secrets, deliveries and attempts, batches.

Made by migration 0002_events. Imported at the end of genq.store.schema, so `Base.metadata` always holds them.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from genq.store.schema import Base, Job, JSONType, UTCDateTime, utcnow

DELIVERY_STATUSES = ("pending", "succeeded", "failed", "gone")


class JobEvent(Base):
    """One entry of a job's event log: a status change or a piece of generated text.

    `seq` counts from 1 per job with no gaps; it is allocated from `jobs.event_seq` under the job row's lock,
    so a reader that has seen seq n never later finds a new event below n.
    """

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "status" | "delta"
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)  # {"status": ...} | {"text": ...}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (CheckConstraint("kind IN ('status', 'delta')", name="ck_job_events_kind"),)


class WebhookSecret(Base):
    """A signing secret. The highest `id` is current; an older one still signs until its successor is
    older than the grace period, so receivers can switch secrets without missing a message."""

    __tablename__ = "webhook_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # generation: 1, 2, ...
    secret: Mapped[str] = mapped_column(String(128), nullable=False)  # whsec_<base64>
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class WebhookDelivery(Base):
    """One webhook message to send (the outbox row): created in the transaction of the status change."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    event: Mapped[str] = mapped_column(String(32), nullable=False)  # "job.started" | "job.completed"
    webhook_id: Mapped[str] = mapped_column(String(255), nullable=False)  # the `webhook-id` header (message id)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)  # the job object at the event
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set while pending
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # an attempt is in flight until then
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a broker message exists for it since
    redelivery_of: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'gone')", name="ck_webhook_deliveries_status"
        ),
        Index("ix_webhook_deliveries_job_id", "job_id"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),  # the sweep's query
    )


class WebhookAttempt(Base):
    """What one delivery attempt did (genq.webhooks.Attempt, stored)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # succeeded | retry | failed | gone
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    response_excerpt: Mapped[str] = mapped_column(Text, nullable=False, default="")
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_webhook_attempts_delivery_id", "delivery_id", "number"),)


class Batch(Base):
    """A set of jobs submitted together as one JSONL file. Its status and counts are read from its jobs."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    client_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)


# On jobs, declared here with the columns they index (the columns themselves are in genq.store.schema.Job).
Index("ux_jobs_batch_custom_id", Job.batch_id, Job.custom_id, unique=True)
Index("ix_jobs_batch_line", Job.batch_id, Job.batch_line)
