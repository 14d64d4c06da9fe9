"""API keys and their quotas: the `api_keys` table, daily token usage per key, and who owns a job, a batch and a
webhook secret.

Revision ID: 0005_api_keys
Revises: 0004_openai_files
Create Date: 2026-12-01

Owners are nullable on jobs and batches: a job submitted with auth off (or before this revision) has none, and
is seen only while auth is off. Webhook secrets get an owner in their primary key ('' for the open API's
secrets, which keep their generations), so each key signs with its own.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005_api_keys"
down_revision: str | None = "0004_openai_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("max_concurrent", sa.Integer()),
        sa.Column("tokens_per_day", sa.BigInteger()),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS),
    )
    op.create_table(
        "api_key_usage",
        sa.Column("key_id", sa.String(36), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(36)))
        batch.add_column(sa.Column("tokens_reserved", sa.Integer()))
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.create_index("ix_jobs_owner_created_at", "jobs", ["owner", "created_at"])
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("owner", sa.String(36)))
    _copy_secrets(with_owner=True)


def downgrade() -> None:
    _copy_secrets(with_owner=False)  # the keys' own secrets go with their keys
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("owner")
    op.drop_index("ix_jobs_owner_created_at", table_name="jobs")
    op.drop_index("ix_jobs_owner_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("tokens_reserved")
        batch.drop_column("owner")
    op.drop_table("api_key_usage")
    op.drop_table("api_keys")


def _copy_secrets(with_owner: bool) -> None:
    """Rebuild webhook_secrets with (owner, id) as its primary key, or back with id alone (the open API's
    secrets only), keeping the rows: a new table, a copy, a rename (a primary key changes this way on PostgreSQL
    and SQLite alike)."""
    columns: list[sa.Column[Any]] = [sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
               sa.Column("secret", sa.String(128), nullable=False), sa.Column("created_at", _TS, nullable=False)]
    if with_owner:
        columns.insert(0, sa.Column("owner", sa.String(36), nullable=False, server_default=""))
    key = ["owner", "id"] if with_owner else ["id"]
    op.create_table("webhook_secrets_copy", *columns, sa.PrimaryKeyConstraint(*key))
    op.execute("INSERT INTO webhook_secrets_copy (id, secret, created_at) SELECT id, secret, created_at "
               "FROM webhook_secrets" + ("" if with_owner else " WHERE owner = ''"))
    op.drop_table("webhook_secrets")
    op.rename_table("webhook_secrets_copy", "webhook_secrets")
