"""Events, webhooks and batches: the job event log, webhook secrets/deliveries/attempts, batches, and the
jobs columns they need.

Revision ID: 0002_events
Revises: 0001_jobs
Create Date: 2025-01-02
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_events"
down_revision: str | None = "0001_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported from genq.store.schema: a migration records the schema as it was at this revision.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMNs (no foreign key): SQLite does them in place, without copying the jobs table.
    op.add_column("jobs", sa.Column("event_seq", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("webhook", sa.Text()))
    op.add_column("jobs", sa.Column("webhook_events_filter", _JSON))
    op.add_column("jobs", sa.Column("batch_id", sa.String(36)))
    op.add_column("jobs", sa.Column("custom_id", sa.String(255)))
    op.add_column("jobs", sa.Column("batch_line", sa.Integer()))
    op.create_index("ux_jobs_batch_custom_id", "jobs", ["batch_id", "custom_id"], unique=True)
    op.create_index("ix_jobs_batch_line", "jobs", ["batch_id", "batch_line"])

    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.CheckConstraint("kind IN ('status', 'delta')", name="ck_job_events_kind"),
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("webhook_id", sa.String(255), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _TS),
        sa.Column("locked_until", _TS),
        sa.Column("dispatched_at", _TS),
        sa.Column("redelivery_of", sa.String(36)),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'gone')", name="ck_webhook_deliveries_status"
        ),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.create_index("ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=False),
        sa.Column("next_retry_at", _TS),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id", "number"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("metadata", _JSON),
    )


def downgrade() -> None:
    op.drop_table("batches")
    op.drop_index("ix_webhook_attempts_delivery_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_status_next", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_job_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_secrets")
    op.drop_table("job_events")
    op.drop_index("ix_jobs_batch_line", table_name="jobs")
    op.drop_index("ux_jobs_batch_custom_id", table_name="jobs")
    # drop_column on SQLite needs batch mode (a table copy); the env renders it so.
    with op.batch_alter_table("jobs") as batch:
        for column in ("batch_line", "custom_id", "batch_id", "webhook_events_filter", "webhook", "event_seq"):
            batch.drop_column(column)
