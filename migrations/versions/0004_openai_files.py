"""The OpenAI-compatible Batch API: uploaded files (`openai_files`) and what an OpenAI batch adds to a genq batch
(`openai_batches`: its endpoint, input file, completion window and cancel request).

Revision ID: 0004_openai_files
Revises: 0003_events_lifecycle
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_openai_files"
down_revision: str | None = "0003_events_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "openai_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_openai_files_created_at", "openai_files", ["created_at"])
    op.create_table(
        "openai_batches",
        sa.Column("batch_id", sa.String(36), sa.ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(64), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("cancel_requested_at", _TS),
    )
    op.create_index("ix_openai_batches_created_at", "openai_batches", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_openai_batches_created_at", table_name="openai_batches")
    op.drop_table("openai_batches")
    op.drop_index("ix_openai_files_created_at", table_name="openai_files")
    op.drop_table("openai_files")
