"""The admin dashboard: job counts kept by triggers, paused queues, the worker registry, dashboard users,
their sessions and the audit log; indexes for the dashboard's queries.

Revision ID: 0006_admin
Revises: 0005_api_keys
Create Date: 2026-12-01

`job_counts` holds how many jobs have each (model, status). Triggers on `jobs` keep it in the transaction of
every insert, status or model change and delete, whatever code makes them, so counting jobs never scans the
table. On PostgreSQL each pair is spread over 16 shards (the backend's pid modulo 16): two concurrent
transitions touch the same counter row only when their connections share a shard, and a trigger takes its two
rows in (model, status) order so that such transactions cannot deadlock on them. SQLite has one writer at a
time: one shard. A SQLite table rebuild of `jobs` (batch mode recreating it) drops its triggers: a migration
that does one must create them again (`create_count_triggers`).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_admin"
down_revision: str | None = "0005_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")

_PG_FUNCTIONS = """
CREATE FUNCTION genq_job_counts_add(m text, st text, sh int, d int) RETURNS void LANGUAGE sql AS $$
  INSERT INTO job_counts (model, status, shard, n) VALUES (m, st, sh, d)
  ON CONFLICT (model, status, shard) DO UPDATE SET n = job_counts.n + EXCLUDED.n
$$;
CREATE FUNCTION genq_job_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sh int := pg_backend_pid() % 16;
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM genq_job_counts_add(NEW.model, NEW.status, sh, 1);
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM genq_job_counts_add(OLD.model, OLD.status, sh, -1);
  ELSIF OLD.status IS DISTINCT FROM NEW.status OR OLD.model IS DISTINCT FROM NEW.model THEN
    IF (OLD.model, OLD.status) < (NEW.model, NEW.status) THEN  -- the two rows in one global order
      PERFORM genq_job_counts_add(OLD.model, OLD.status, sh, -1);
      PERFORM genq_job_counts_add(NEW.model, NEW.status, sh, 1);
    ELSE
      PERFORM genq_job_counts_add(NEW.model, NEW.status, sh, 1);
      PERFORM genq_job_counts_add(OLD.model, OLD.status, sh, -1);
    END IF;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER genq_job_counts AFTER INSERT OR DELETE OR UPDATE OF status, model ON jobs
  FOR EACH ROW EXECUTE FUNCTION genq_job_counts();
"""

_SQLITE_ADD = ("INSERT INTO job_counts (model, status, shard, n) VALUES ({m}, {s}, 0, {d}) "
               "ON CONFLICT (model, status, shard) DO UPDATE SET n = n + excluded.n;")
_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER genq_job_counts_insert AFTER INSERT ON jobs BEGIN "
    f"{_SQLITE_ADD.format(m='NEW.model', s='NEW.status', d=1)} END",
    f"CREATE TRIGGER genq_job_counts_delete AFTER DELETE ON jobs BEGIN "
    f"{_SQLITE_ADD.format(m='OLD.model', s='OLD.status', d=-1)} END",
    f"CREATE TRIGGER genq_job_counts_update AFTER UPDATE OF status, model ON jobs "
    f"WHEN OLD.status IS NOT NEW.status OR OLD.model IS NOT NEW.model BEGIN "
    f"{_SQLITE_ADD.format(m='OLD.model', s='OLD.status', d=-1)} "
    f"{_SQLITE_ADD.format(m='NEW.model', s='NEW.status', d=1)} END",
]


def create_count_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTIONS)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def drop_count_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS genq_job_counts ON jobs")
        op.execute("DROP FUNCTION IF EXISTS genq_job_counts()")
        op.execute("DROP FUNCTION IF EXISTS genq_job_counts_add(text, text, int, int)")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS genq_job_counts_{name}")


def upgrade() -> None:
    # a job retried from the dashboard starts a new generation: its webhooks get new `webhook-id`s
    op.add_column("jobs", sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "job_counts",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("shard", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("n", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # the jobs there are now, counted once; the triggers keep the counts from here on
    op.execute("INSERT INTO job_counts (model, status, shard, n) "
               "SELECT model, status, 0, count(*) FROM jobs GROUP BY model, status")
    create_count_triggers()
    op.create_table(
        "paused_queues",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("paused_at", _TS, nullable=False),
        sa.Column("paused_by", sa.String(64)),
    )
    op.create_table(
        "worker_processes",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("models", _JSON, nullable=False),
        sa.Column("info", _JSON, nullable=False),
        sa.Column("batch_limit", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("in_batch", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tokens_per_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.Column("stopped_at", _TS),
    )
    op.create_index("ix_worker_processes_heartbeat", "worker_processes", ["heartbeat_at"])
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("role IN ('admin', 'viewer')", name="ck_admin_users_role"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("admin_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_admin_sessions_expires_at", "admin_sessions", ["expires_at"])
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("address", sa.String(64)),
        sa.Column("detail", _JSON, nullable=False),
    )
    op.create_index("ix_admin_audit_at", "admin_audit", ["at"])
    op.create_index("ix_jobs_completed_at", "jobs", ["completed_at"])
    op.create_index("ix_jobs_queued_model_created", "jobs", ["model", "created_at"],
                    postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"))
    op.create_index("ix_jobs_worker_started", "jobs", ["worker_id", "started_at"])
    op.create_index("ix_jobs_metadata", "jobs", ["metadata"], postgresql_using="gin",
                    postgresql_ops={"metadata": "jsonb_path_ops"})
    op.create_index("ix_webhook_deliveries_status_updated", "webhook_deliveries", ["status", "updated_at"])
    op.create_index("ix_batches_created_at", "batches", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_batches_created_at", table_name="batches")
    op.drop_index("ix_webhook_deliveries_status_updated", table_name="webhook_deliveries")
    op.drop_index("ix_jobs_metadata", table_name="jobs")
    op.drop_index("ix_jobs_worker_started", table_name="jobs")
    op.drop_index("ix_jobs_queued_model_created", table_name="jobs")
    op.drop_index("ix_jobs_completed_at", table_name="jobs")
    op.drop_index("ix_admin_audit_at", table_name="admin_audit")
    op.drop_table("admin_audit")
    op.drop_index("ix_admin_sessions_expires_at", table_name="admin_sessions")
    op.drop_table("admin_sessions")
    op.drop_table("admin_users")
    op.drop_index("ix_worker_processes_heartbeat", table_name="worker_processes")
    op.drop_table("worker_processes")
    op.drop_table("paused_queues")
    drop_count_triggers()
    op.drop_table("job_counts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("retries")
