"""Whether the service's dependencies answer: the database, its schema (at the migrations' head), the broker.
`GET /healthz` reports these checks; `genq check` (a container healthcheck) exits non-zero unless all pass.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from celery import Celery
from sqlalchemy import Engine, text

from genq.store.db_errors import NOT_MIGRATED_HINT, is_unavailable
from genq.store.db_retry import describe
from genq.store.migrate import migration_scripts

BROKER_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    """One dependency's state: `ok`, and when not, the error `code` an API client sees; `detail` in words."""

    name: str  # database | migrations | broker
    ok: bool
    detail: str
    code: str | None = None


@functools.lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    """The installed migrations (as genq.store.migrate runs them), read once."""
    return migration_scripts()


def check_database(engine: Engine) -> list[Check]:
    """The database answers, and its schema is at the head of the installed migrations (two checks)."""
    scripts = _scripts()
    head = scripts.get_current_head()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as e:
        if not is_unavailable(e) and not isinstance(e, OSError):
            raise
        return [Check("database", False, f"unreachable: {describe(e)}", "database_unavailable"),
                Check("migrations", False, "unknown: the database is unreachable", "database_unavailable")]
    database = Check("database", True, "ok")
    if current == head:
        return [database, Check("migrations", True, f"at head ({head})")]
    if current is None:
        return [database, Check("migrations", False, f"the database was never migrated: {NOT_MIGRATED_HINT}",
                                "database_not_migrated")]
    try:
        scripts.get_revision(current)
    except ResolutionError:  # a revision these migrations do not know: newer code migrated it, to a superset
        return [database, Check("migrations", True, f"at {current}, newer than this code's head ({head})")]
    return [database, Check("migrations", False, f"at {current}, behind head {head}: {NOT_MIGRATED_HINT}",
                            "database_not_migrated")]


def check_broker(app: Celery, timeout: float = BROKER_TIMEOUT_S) -> Check:
    """The broker accepts a connection (Redis answers; the file-system broker's folders are there)."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
    except Exception as e:  # kombu raises many types (OperationalError, OSError, ...): all mean "unreachable"
        return Check("broker", False, f"unreachable: {type(e).__name__}: {e}", "broker_unavailable")
    return Check("broker", True, "ok")
