"""The `genq` command line (run as `python -m genq`, as the console script does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from e2e_helpers import ROOT

from genq.store import migrate


def _genq(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genq", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": "", "GENQ_BROKER_URL": "", **(env or {})},
    )


def test_db_upgrade_creates_the_default_sqlite_database_under_var(tmp_path: Path) -> None:
    result = _genq("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "var" / "genq.db"
    assert db.is_file()
    assert migrate.current_revision(f"sqlite:///{db}") == migrate.head_revision(f"sqlite:///{db}")


def test_db_upgrade_migrates_the_database_url_given(postgres_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = postgres_database()
    result = _genq("db", "upgrade", cwd=tmp_path, env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(url) == migrate.head_revision(url) is not None


def test_a_configuration_error_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = _genq("db", "upgrade", cwd=tmp_path, env={"GENQ_BATCH_SIZE": "lots"})
    assert result.returncode == 2
    assert "GENQ_BATCH_SIZE" in result.stderr


def test_check_fails_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    result = _genq("check", cwd=tmp_path, env={"GENQ_BROKER_URL": "redis://127.0.0.1:9/0"})
    assert result.returncode == 1 and "genq check" in result.stderr


def test_check_passes_on_the_embedded_defaults_once_migrated(tmp_path: Path) -> None:
    result = _genq("check", cwd=tmp_path)
    assert result.returncode == 1 and "genq db upgrade" in result.stderr
    assert _genq("db", "upgrade", cwd=tmp_path).returncode == 0
    result = _genq("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_worker_refuses_an_unknown_queue_kind(tmp_path: Path) -> None:
    result = _genq("worker", "--queues", "models,emails", cwd=tmp_path)
    assert result.returncode == 2 and "--queues" in result.stderr


def test_a_bad_webhook_allow_list_is_a_configuration_error(tmp_path: Path) -> None:
    result = _genq("db", "upgrade", cwd=tmp_path, env={"GENQ_WEBHOOK_ALLOW": "10.0.0.1/8"})
    assert result.returncode == 2 and "GENQ_WEBHOOK_ALLOW" in result.stderr
def test_sweep_expires_jobs_past_their_ttl_and_reports_what_it_did(tmp_path: Path) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from genq.lifecycle import Schedule
    from genq.store.db import make_engine, make_session_factory
    from genq.store.jobs import JobStore
    from genq.store.schema import Job, utcnow

    url = f"sqlite:///{tmp_path / 'genq.db'}"
    migrate.upgrade(url)
    store = JobStore(make_session_factory(make_engine(url)))
    job = store.create(model="m", input={"prompt": "hi"}, params={}, schedule=Schedule(ttl_seconds=1))
    with store.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job.id).values(expires_at=utcnow() - timedelta(seconds=1)))
    result = _genq("sweep", cwd=tmp_path, env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert '"expired": 1' in result.stdout
    assert store.get(job.id).status == "expired"
