"""Database engines: SQLite in WAL mode with a busy timeout; unsupported URLs refused."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from genq.store.db import DatabaseURLError, make_engine


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_creates_its_folder(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'deep' / 'er' / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    engine.dispose()
    assert (tmp_path / "deep" / "er" / "x.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db", "postgresql+psycopg2://u@h/d"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(DatabaseURLError):
        make_engine(url)
