"""A few bare psycopg connections for the API's hottest statements (genq/store/hot_reads.py, hot_insert.py):
through SQLAlchemy (a pool checkout and return, the ORM's unit of work or identity map, statement caching)
each of them cost the API process about four times the CPU of the same statement on a bare connection.
PostgreSQL only: `bare_connections` gives None for SQLite, whose callers keep their SQLAlchemy path.

At most `size` connections at once, made on demand, kept in autocommit mode in a list of idle ones. One that
fails broken is closed and the idle ones are dropped with it (a database restart drops them all, as
SQLAlchemy's pool does on a disconnect), so one request sees an outage and the next ones connect again.
psycopg's errors come out as SQLAlchemy's (`DBAPIError.instance`: OperationalError, IntegrityError, ...), so
callers and the API's 503 handling see what they see from the ORM.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import exc
from sqlalchemy.engine import make_url

from genq.store.db import POSTGRES_CONNECT_TIMEOUT_S, normalize_url

WAIT_S = 10  # the longest a caller waits for one of the `size` connections


class BareConnections:
    def __init__(self, conninfo: str, size: int):
        self._conninfo = conninfo
        self._idle: list[psycopg.Connection[Any]] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for a few statements; psycopg errors raised in the block come out as SQLAlchemy's."""
        if not self._slots.acquire(timeout=WAIT_S):
            raise exc.TimeoutError(f"no database connection free within {WAIT_S} s")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = _sqlalchemy_errors(psycopg.connect, self._conninfo, autocommit=True,
                                          connect_timeout=POSTGRES_CONNECT_TIMEOUT_S)
            try:
                yield conn
            except psycopg.Error as e:
                self._after_error(conn)
                raise exc.DBAPIError.instance(getattr(e, "statement", None) or "", (), e, psycopg.Error) from e
            except BaseException:
                self._after_error(conn)
                raise
            self._give_back(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _after_error(self, conn: psycopg.Connection[Any]) -> None:
        if conn.broken or conn.closed:
            conn.close()
            self.close()  # the others most likely went with it
        else:
            self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._idle.append(conn)


def bare_connections(database_url: str, size: int) -> BareConnections | None:
    """At most `size` bare connections to `database_url`'s PostgreSQL database; None for SQLite."""
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() != "postgresql":
        return None
    return BareConnections(url.set(drivername="postgresql").render_as_string(hide_password=False), size)


def utc(value: Any) -> Any:
    """A value read from a bare connection as a session would give it: times as aware UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _sqlalchemy_errors(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except psycopg.Error as e:
        raise exc.DBAPIError.instance("connect", (), e, psycopg.Error) from e
