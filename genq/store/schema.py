"""The database schema as SQLAlchemy 2.0 typed models. Tables are made only by Alembic (migrations/).

Statuses are plain strings under a CHECK constraint, not a database enum, so a later migration can add
one (e.g. a cancel request) on PostgreSQL and SQLite alike. Columns that later features need
(priority, idempotency key, webhook, deadline, batch) are added by their own migrations as nullable
columns; nothing here assumes a job has only these.
"""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # its queue time-to-live ran out before any worker started it


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite stores no zone, so naive values read back are UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: genq stores timezone-aware UTC only")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4, as text
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    input: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)  # {"prompt": str} | {"messages": [...]}
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)  # GenerationParams.to_dict()
    output_text: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    logprobs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)  # only when params.logprobs is set
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # "metadata" is reserved by SQLAlchemy's declarative base, hence the attribute name.
    client_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    # events, webhooks and batches (migration 0002_events; their tables are in genq/store/schema_events.py)
    # the last job_events.seq of this job: event writers take the next one by incrementing it
    event_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    webhook: Mapped[str | None] = mapped_column(Text)
    webhook_events_filter: Mapped[list[str] | None] = mapped_column(JSONType)
    batch_id: Mapped[str | None] = mapped_column(String(36))
    custom_id: Mapped[str | None] = mapped_column(String(255))
    batch_line: Mapped[int | None] = mapped_column(Integer)  # the request's line number in its batch file
    # lifecycle (migration 0002_lifecycle; see genq/lifecycle.py): scheduling, leases, cancel requests
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3, server_default="3")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # queue TTL: expired if not started by then
    deadline_seconds: Mapped[int | None] = mapped_column(Integer)  # run time allowed per attempt
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # running: renewed by the holder
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last time its message was sent

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'expired')", name="ck_jobs_status"
        ),
        CheckConstraint(
            "finish_reason IS NULL OR finish_reason IN ('eos', 'length', 'stop', 'canceled')",
            name="ck_jobs_finish_reason",
        ),
        # a sweeper finds old queued jobs, an operator lists running ones: both by status, oldest first
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_created_at", "created_at"),
        # queue positions (same model, queued, by priority then age) and the sweeper's lease scan
        Index("ix_jobs_model_status_priority", "model", "status", "priority", "created_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
    )


class IdempotencyKey(Base):
    """An `Idempotency-Key` a client sent with `POST /v1/jobs`, and the job it made (genq/store/idempotency.py)."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)  # sha256 of the canonical body
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


# The event log, webhook and batch tables register on Base.metadata with this module (imported last: they use Base).
from genq.store import schema_events  # noqa: E402,F401
