"""What a database error means for the caller: the database is away for now (wait and retry; HTTP 503), its
schema is missing or behind the code (run `genq db upgrade`; HTTP 503), or something else (a bug: 500).

SQLAlchemy wraps the driver's errors: `OperationalError` is what psycopg raises for a refused or dropped
connection, a server shutting down or starting up, and a serialization failure or deadlock (all worth a retry);
`InterfaceError` a connection already closed; `TimeoutError` a pool with no free connection in time. SQLite
raises `OperationalError` too, for a locked database, and also for a missing table, which is a schema problem.
"""
from __future__ import annotations

from sqlalchemy import exc

NOT_MIGRATED_HINT = "run `genq db upgrade` (genq up does it on start)"

# PostgreSQL SQLSTATEs of a schema older than the code: undefined table, undefined column
_UNDEFINED_SQLSTATES = frozenset({"42P01", "42703"})
_SQLITE_UNDEFINED = ("no such table", "no such column", "has no column named")


def is_unmigrated(error: BaseException) -> bool:
    """The database answers, but genq's tables (or columns) are not there: it was not migrated to head."""
    if not isinstance(error, exc.DBAPIError):
        return False
    if getattr(error.orig, "sqlstate", None) in _UNDEFINED_SQLSTATES:
        return True
    return isinstance(error, exc.OperationalError) and any(s in str(error.orig) for s in _SQLITE_UNDEFINED)


def is_unavailable(error: BaseException) -> bool:
    """The database cannot be reached or cannot serve now (connection refused or lost, server restarting,
    pool exhausted, a transaction to retry): the same request may succeed in a moment."""
    if is_unmigrated(error):
        return False
    if isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError)):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated
