"""Quotas and queue figures of bounded cost: a key's count of unfinished jobs kept on its row, and an index
for a model's latest finished jobs.

Revision ID: 0007_quota_counters
Revises: 0006_admin
Create Date: 2026-12-01

`api_keys.live_jobs` is the number of the key's queued or running jobs, kept only for keys with a
`max_concurrent` quota (genq/store/quotas.py): a submission checks and raises it in one conditional UPDATE
instead of counting the key's jobs, and a job's final transition lowers it (a retry raises it again). It is
filled here from the jobs as they are. `ix_jobs_model_completed_at` serves the estimated wait's read of a
model's last finished jobs (genq/store/listing.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_quota_counters"
down_revision: str | None = "0006_admin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("live_jobs", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE api_keys SET live_jobs = (SELECT count(*) FROM jobs WHERE jobs.owner = api_keys.id "
        "AND jobs.status IN ('queued', 'running')) WHERE max_concurrent IS NOT NULL"
    )
    op.create_index("ix_jobs_model_completed_at", "jobs", ["model", "completed_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_model_completed_at", table_name="jobs")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("live_jobs")
