"""The schema is made only by the Alembic migrations, identically on PostgreSQL and SQLite."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from genq.store import migrate
from genq.store.db import make_engine
from genq.store.schema import Base


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("postgres_database")
        return make()
    return f"sqlite:///{tmp_path / 'nested' / 'genq.db'}"


def test_upgrade_creates_the_jobs_table_with_its_indexes(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        insp = inspect(engine)
        assert "jobs" in insp.get_table_names()
        indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("jobs")}
        assert indexes["ix_jobs_status_created_at"] == ["status", "created_at"]
        assert indexes["ix_jobs_created_at"] == ["created_at"]
    finally:
        engine.dispose()
    assert migrate.current_revision(empty_database_url) == migrate.head_revision(empty_database_url)


def test_migrated_schema_matches_the_sqlalchemy_models(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_upgrade_twice_is_a_no_op_and_downgrade_then_upgrade_works(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    migrate.upgrade(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    engine = make_engine(empty_database_url)
    try:
        assert "jobs" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    migrate.upgrade(empty_database_url)
    assert migrate.current_revision(empty_database_url) == migrate.head_revision(empty_database_url)


def test_jobs_running_at_the_lifecycle_upgrade_get_a_lease_to_finish_under(empty_database_url: str) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import text

    from genq.store.db import make_session_factory
    from genq.store.jobs import JobStore

    migrate.upgrade(empty_database_url, "0001_jobs")
    engine = make_engine(empty_database_url)
    now = datetime.now(timezone.utc)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (id, status, model, input, params, attempts, created_at, updated_at) "
                              "VALUES (:id, 'running', 'm', '{}', '{}', 1, :now, :now)"),
                         {"id": "00000000-0000-4000-8000-000000000001", "now": now.replace(tzinfo=None)})
        migrate.upgrade(empty_database_url)
        job = JobStore(make_session_factory(engine)).get("00000000-0000-4000-8000-000000000001")
    finally:
        engine.dispose()
    assert job.status == "running" and job.priority == 0 and job.max_attempts == 3
    assert now + timedelta(minutes=59) < job.lease_expires_at < now + timedelta(minutes=61)
