"""The schema is made only by the Alembic migrations, identically on PostgreSQL and SQLite, along one linear
history: every revision has one predecessor, and an empty database goes to head and back to base step by step."""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from itertools import pairwise
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
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


def _schema_diffs(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_history_is_one_line_with_no_empty_merge() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite:///unused.db"))
    revisions = list(scripts.walk_revisions())  # head first
    assert [r.revision for r in revisions] == ["0008_queue_order_index", "0007_quota_counters", "0006_admin",
                                               "0005_api_keys",
                                               "0004_openai_files", "0003_events_lifecycle", "0002_events",
                                               "0001_jobs"]
    assert scripts.get_heads() == ["0008_queue_order_index"] and scripts.get_bases() == ["0001_jobs"]
    for newer, older in pairwise(revisions):
        assert newer.down_revision == older.revision  # one predecessor each: no branch, no merge
    assert not any(r.is_merge_point or r.is_branch_point for r in revisions)


def test_the_lifecycle_revision_keeps_the_id_of_the_former_merge() -> None:
    # databases migrated before the history was made linear are at 0003_events_lifecycle, schema included
    scripts = ScriptDirectory.from_config(migrate.alembic_config("sqlite:///unused.db"))
    assert scripts.get_revision("0003_events_lifecycle").down_revision == "0002_events"


def test_each_revision_upgrades_and_downgrades_on_its_own(empty_database_url: str) -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config(empty_database_url))
    line = [r.revision for r in reversed(list(scripts.walk_revisions()))]  # base first
    for revision in line:
        migrate.upgrade(empty_database_url, revision)
        assert migrate.current_revision(empty_database_url) == revision
    assert _schema_diffs(empty_database_url) == []
    for revision in reversed(line[:-1]):
        migrate.downgrade(empty_database_url, revision)
        assert migrate.current_revision(empty_database_url) == revision
    migrate.downgrade(empty_database_url, "base")
    assert migrate.current_revision(empty_database_url) is None
    assert _tables(empty_database_url) <= {"alembic_version"}  # every table genq made is gone


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
    assert _schema_diffs(empty_database_url) == []  # back at head, the models and the schema still agree


def test_jobs_running_at_the_lifecycle_upgrade_get_a_lease_to_finish_under(empty_database_url: str) -> None:
    from datetime import datetime, timedelta

    from sqlalchemy import text

    from genq.store.db import make_session_factory
    from genq.store.jobs import JobStore

    migrate.upgrade(empty_database_url, "0001_jobs")
    engine = make_engine(empty_database_url)
    now = datetime.now(UTC)
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
