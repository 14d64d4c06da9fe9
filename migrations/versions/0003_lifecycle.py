"""Job lifecycle: scheduling (priority, queue TTL, run deadline, attempts), leases, cancel requests,
the `expired` status, and idempotency keys.

Revision ID: 0003_events_lifecycle
Revises: 0002_events
Create Date: 2025-01-02

The history is linear: 0001_jobs, 0002_events, then this revision. Its id is the one of the empty merge
revision that once joined 0002_events and this migration (then 0002_lifecycle, made in parallel on 0001_jobs):
a database migrated before the history was made linear is at 0003_events_lifecycle with both applied, which
is exactly this revision's schema, so it is at head and nothing runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0003_events_lifecycle"
down_revision: str | None = "0002_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_OLD_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')"
_NEW_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'expired')"
# Jobs running when this migration runs were claimed by workers that renew no lease: give them one long enough
# for such a worker to finish (GENQ_JOB_TIMEOUT defaults to 30 min); after it, a lost one is recovered.
_UPGRADE_LEASE = timedelta(hours=1)


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table (it cannot alter a CHECK constraint in place); PostgreSQL alters it
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="3"))
        batch.add_column(sa.Column("expires_at", _TS))
        batch.add_column(sa.Column("deadline_seconds", sa.Integer()))
        batch.add_column(sa.Column("lease_expires_at", _TS))
        batch.add_column(sa.Column("cancel_requested_at", _TS))
        batch.add_column(sa.Column("published_at", _TS))
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", _NEW_STATUSES)
    jobs = sa.table("jobs", sa.column("status", sa.String()), sa.column("lease_expires_at", _TS))
    op.execute(jobs.update().where(jobs.c.status == "running")
               .values(lease_expires_at=datetime.now(UTC) + _UPGRADE_LEASE))
    op.create_index("ix_jobs_model_status_priority", "jobs", ["model", "status", "priority", "created_at"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("ix_jobs_status_lease", table_name="jobs")
    op.drop_index("ix_jobs_model_status_priority", table_name="jobs")
    # expired jobs cannot be represented before this revision: they become failed, with a code saying why
    op.execute("UPDATE jobs SET status = 'failed', error_code = 'expired' WHERE status = 'expired'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_status", type_="check")
        batch.create_check_constraint("ck_jobs_status", _OLD_STATUSES)
        for column in ("published_at", "cancel_requested_at", "lease_expires_at", "deadline_seconds", "expires_at",
                       "max_attempts", "priority"):
            batch.drop_column(column)
