"""An index in delivery order over the queued jobs of each model: (model, priority, created_at, id), queued
jobs only.

Revision ID: 0008_queue_order_index
Revises: 0007_quota_counters
Create Date: 2026-12-01

A queue snapshot (genq/store/queue_snapshot.py) reads each priority's first 1,000 queued jobs of a model in
(created_at, id) order, and a queue position counts the jobs ahead of one in that order
(genq/store/listing.py). Without this index both scanned every queued job of the model on
`ix_jobs_queued_model_created` and filtered them by priority (ten times, for ten priorities): a snapshot of a
model with 12,000 jobs queued took about 100 ms of PostgreSQL's time and held up the polls around it. With
it, each priority is one index range read in order and cut off at its limit.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_queue_order_index"
down_revision: str | None = "0007_quota_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_queued_model_order", "jobs", ["model", "priority", "created_at", "id"],
                    postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_model_order", table_name="jobs")
