"""Join the two revisions made in parallel on 0001_jobs: 0002_events (event log, webhooks, batches) and
0002_lifecycle (scheduling, leases, cancel requests, idempotency keys). They touch different columns and
tables, so either order works; this revision only makes them one line again.

Revision ID: 0003_events_lifecycle
Revises: 0002_events, 0002_lifecycle
Create Date: 2025-01-03
"""
from __future__ import annotations

from typing import Sequence

revision: str = "0003_events_lifecycle"
down_revision: str | Sequence[str] | None = ("0002_events", "0002_lifecycle")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
