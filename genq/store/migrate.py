"""Alembic, configured in code: `script_location` is the installed `migrations` package, no alembic.ini."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from genq.store.db import make_engine, normalize_url


def migration_scripts() -> ScriptDirectory:
    """The installed migration scripts (the `migrations` package)."""
    return ScriptDirectory(str(Path(migrations.__file__).parent))


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for `database_url` whose scripts are the installed migrations package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # ConfigParser interpolates '%': a URL-encoded password must survive it.
    cfg.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision` (creating the SQLite file if needed)."""
    _run(command.upgrade, database_url, revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the database back to `revision` ("base" removes every table genq made)."""
    _run(command.downgrade, database_url, revision)


def _run(alembic_command: Any, database_url: str, revision: str) -> None:
    """One Alembic command in one transaction on a connection of our own engine (SQLite pragmas included)."""
    cfg = alembic_config(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            alembic_command(cfg, revision)
    finally:
        engine.dispose()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(database_url: str) -> str | None:
    """The newest revision among the installed migrations."""
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
