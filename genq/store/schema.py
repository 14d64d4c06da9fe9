"""The database schema as SQLAlchemy 2.0 typed models: every table of the service. Tables are made only by
Alembic (migrations/); a test checks that the migrated database and these models agree.

Tables: `jobs`, `idempotency_keys`, the per-job event log `job_events`, the webhook tables
(`webhook_secrets`, the outbox `webhook_deliveries`, `webhook_attempts`), `batches`, the API keys
(`api_keys`, their daily token usage `api_key_usage`), the OpenAI-compatible Batch API's `openai_files` and
`openai_batches`, and the admin dashboard's (migration 0006_admin): `job_counts` (jobs by model and status, kept
by database triggers), `paused_queues`, `worker_processes`, `admin_users`, `admin_sessions`, `admin_audit`.

Statuses are plain strings under a CHECK constraint, not a database enum, so a later migration can add
one (e.g. a cancel request) on PostgreSQL and SQLite alike. Columns that later features need
(priority, idempotency key, webhook, deadline, batch) are added by their own migrations as nullable
columns; nothing here assumes a job has only these.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from genq.status import JobStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite stores no zone, so naive values read back are UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: genq stores timezone-aware UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
    # times it was retried after it ended (the dashboard's retry): each is a new generation of its webhooks
    retries: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # "metadata" is reserved by SQLAlchemy's declarative base, hence the attribute name.
    client_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    # events, webhooks and batches (migration 0002_events; their tables are below)
    # the last job_events.seq of this job: event writers take the next one by incrementing it
    event_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    webhook: Mapped[str | None] = mapped_column(Text)
    webhook_events_filter: Mapped[list[str] | None] = mapped_column(JSONType)
    batch_id: Mapped[str | None] = mapped_column(String(36))
    custom_id: Mapped[str | None] = mapped_column(String(255))
    batch_line: Mapped[int | None] = mapped_column(Integer)  # the request's line number in its batch file
    # lifecycle (migration 0003_events_lifecycle; see genq/lifecycle.py): scheduling, leases, cancel requests
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3, server_default="3")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # queue TTL: expired if not started by then
    deadline_seconds: Mapped[int | None] = mapped_column(Integer)  # run time allowed per attempt
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # running: renewed by the holder
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last time its message was sent
    # API keys (migration 0005_api_keys; genq/store/api_keys.py, quotas.py): the key that submitted it (None:
    # auth was off), and the tokens its daily quota holds for it until it ends (None: no quota counted it)
    owner: Mapped[str | None] = mapped_column(String(36))
    tokens_reserved: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in JobStatus)})", name="ck_jobs_status"),
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
        # a batch's jobs: one custom_id each, read back in line order
        Index("ux_jobs_batch_custom_id", "batch_id", "custom_id", unique=True),
        Index("ix_jobs_batch_line", "batch_id", "batch_line"),
        # a key's unfinished jobs (its concurrency quota) and its listing
        Index("ix_jobs_owner_status", "owner", "status"),
        Index("ix_jobs_owner_created_at", "owner", "created_at"),
        # the admin dashboard (0006_admin): finished in the last hour, a model's oldest waiting job, a worker's jobs
        Index("ix_jobs_completed_at", "completed_at"),
        Index("ix_jobs_model_completed_at", "model", "completed_at"),  # a model's last finished jobs (0007)
        Index("ix_jobs_queued_model_created", "model", "created_at",
              postgresql_where=text("status = 'queued'"), sqlite_where=text("status = 'queued'")),
        Index("ix_jobs_worker_started", "worker_id", "started_at"),
        # a model's queue in delivery order, per priority (queue snapshots and positions, 0008)
        Index("ix_jobs_queued_model_order", "model", "priority", "created_at", "id",
              postgresql_where=text("status = 'queued'"), sqlite_where=text("status = 'queued'")),
        # metadata filters (`@>` containment) on PostgreSQL; on SQLite a plain index the filter does not use
        Index("ix_jobs_metadata", "metadata", postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}),
    )


class IdempotencyKey(Base):
    """An `Idempotency-Key` a client sent with `POST /v1/jobs`, and the job it made (genq/store/idempotency.py)."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)  # sha256 of the canonical body
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


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

    # whose secret: an API key's id, or '' for the open API's (auth off)
    owner: Mapped[str] = mapped_column(String(36), primary_key=True, server_default="")
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
        Index("ix_webhook_deliveries_status_updated", "status", "updated_at"),  # the dashboard's failing list
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
    owner: Mapped[str | None] = mapped_column(String(36))  # the API key that submitted it (None: auth off)

    __table_args__ = (Index("ix_batches_created_at", "created_at"),)


class ApiKey(Base):
    """An API key: its name, the SHA-256 of its secret value (the value itself is shown once and never stored),
    its quotas (None: unlimited) and when it was revoked."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)  # unfinished (queued or running) jobs at once
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)  # prompt + completion tokens per UTC day
    # its queued and running jobs, kept for a key with max_concurrent (genq/store/quotas.py; 0007)
    live_jobs: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKeyUsage(Base):
    """Tokens a key's jobs hold against its daily quota, per UTC day (`YYYY-MM-DD`): reserved at submit,
    settled to what the job used when it ends (genq/store/quotas.py)."""

    __tablename__ = "api_key_usage"

    key_id: Mapped[str] = mapped_column(String(36), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class OpenAIFile(Base):
    """A file uploaded through the OpenAI-compatible API (`POST /openai/v1/files`, purpose `batch`)."""

    __tablename__ = "openai_files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-<uuid>
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column("bytes", Integer, nullable=False)
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    owner: Mapped[str | None] = mapped_column(String(64))  # the uploading API key's id; None without keys
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (Index("ix_openai_files_created_at", "created_at"),)


class OpenAIBatch(Base):
    """What an OpenAI batch adds to the genq batch it is (same id): its endpoint, input file and cancel request."""

    __tablename__ = "openai_batches"

    batch_id: Mapped[str] = mapped_column(String(36), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64), nullable=False)  # /v1/chat/completions | /v1/completions
    input_file_id: Mapped[str] = mapped_column(String(64), nullable=False)
    completion_window: Mapped[str] = mapped_column(String(16), nullable=False)
    owner: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_openai_batches_created_at", "created_at"),)


# --- the admin dashboard (migration 0006_admin) ---


class JobCount(Base):
    """How many jobs have each (model, status): kept by triggers on `jobs` (made by the migration) in the
    transaction of every insert, status change and delete, so counting never scans `jobs`. PostgreSQL spreads
    each pair over shards (the backend's pid modulo 16) so that concurrent transitions rarely wait on one row;
    the count is the sum over shards (genq/store/job_counts.py)."""

    __tablename__ = "job_counts"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class PausedQueue(Base):
    """A model whose queue is paused: workers claim none of its queued jobs until it is resumed."""

    __tablename__ = "paused_queues"

    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    paused_by: Mapped[str | None] = mapped_column(String(64))


class WorkerProcess(Base):
    """A worker process as it registered and last reported itself (workers/heartbeat.py)."""

    __tablename__ = "worker_processes"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # the jobs' worker_id: host:pid
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    models: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    info: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)  # device, dtype, quantization, ...
    batch_limit: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    in_batch: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    tokens_per_s: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a clean shutdown

    __table_args__ = (Index("ix_worker_processes_heartbeat", "heartbeat_at"),)


ADMIN_ROLES = ("admin", "viewer")


class AdminUser(Base):
    """A dashboard user (not a client API key). `password_hash` is scrypt (genq/store/admin_users.py)."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    failed_logins: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # repeated failures slow logins down
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (CheckConstraint("role IN ('admin', 'viewer')", name="ck_admin_users_role"),)


class AdminSession(Base):
    """A logged-in browser: the cookie holds a random token, the database its sha256 and the CSRF token."""

    __tablename__ = "admin_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("admin_users.id", ondelete="CASCADE"), nullable=False)
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_admin_sessions_expires_at", "expires_at"),)


class AdminAudit(Base):
    """One action taken in the dashboard: who, when, what, on which target, from where, and what it did."""

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    username: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str] = mapped_column(Text, nullable=False)
    address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)

    __table_args__ = (Index("ix_admin_audit_at", "at"),)
