"""The API's reads of (nearly) every request on bare psycopg connections: an API key by its digest, a job by
its id. PostgreSQL only; on SQLite `hot_reads` gives None and the callers keep their ORM path.

Through SQLAlchemy (a pool checkout and return, the ORM's identity map and row loading) each of these reads
cost the API process about four times the CPU of the same statement on a bare connection, and they are most
of a poll. Here each is one prepared statement (prepared on a connection's first use of it) on a connection
taken from a small list of idle ones.

Connections: at most `size` at once, made on demand. One that fails is closed, and the idle ones are dropped
with it (a database restart drops them all, as SQLAlchemy's pool does on a disconnect), so one request sees
an outage and the next ones connect again. Errors come out as SQLAlchemy's (`DBAPIError.instance`), so the
API answers an unreachable database with its usual 503.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import exc, inspect
from sqlalchemy.engine import make_url

from genq.ids import is_id
from genq.store.db import POSTGRES_CONNECT_TIMEOUT_S, normalize_url
from genq.store.schema import ApiKey, Job

WAIT_S = 10  # the longest a request waits for one of the `size` connections


def _columns(model: Any) -> tuple[list[str], str]:
    """A mapped class's attribute names and the SQL list of their columns, in the same order."""
    attrs = [(a.key, a.columns[0].name) for a in inspect(model).column_attrs]
    return [key for key, _ in attrs], ", ".join(f'"{name}"' for _, name in attrs)


_JOB_ATTRS, _JOB_COLUMNS = _columns(Job)
_JOB_SQL = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s"
_KEY_ATTRS = ["id", "name", "max_concurrent", "tokens_per_day", "created_at", "revoked_at"]
_KEY_SQL = f"SELECT {', '.join(_KEY_ATTRS)} FROM {ApiKey.__tablename__} WHERE key_hash = %s"


class HotReads:
    def __init__(self, conninfo: str, size: int):
        self._conninfo = conninfo
        self._idle: list[psycopg.Connection[Any]] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()

    def job(self, job_id: str) -> Job | None:
        """The job (a transient row, readable as one loaded by a session), or None (a malformed id too)."""
        if not is_id(job_id):
            return None
        row = self._one(_JOB_SQL, job_id)
        return Job(**dict(zip(_JOB_ATTRS, map(_utc, row), strict=True))) if row is not None else None

    def key(self, key_hash: str) -> dict[str, Any] | None:
        """The API key whose digest is `key_hash`: its id, name, quotas, created_at and revoked_at."""
        row = self._one(_KEY_SQL, key_hash)
        return dict(zip(_KEY_ATTRS, map(_utc, row), strict=True)) if row is not None else None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _one(self, sql: str, param: str) -> tuple[Any, ...] | None:
        with self._connection() as conn:
            try:
                return conn.execute(sql, (param,), prepare=True).fetchone()
            except psycopg.Error as e:
                raise exc.DBAPIError.instance(sql, (param,), e, psycopg.Error) from e

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=WAIT_S):
            raise exc.TimeoutError(f"no database connection free within {WAIT_S} s")
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                try:
                    conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S)
                except psycopg.Error as e:
                    raise exc.DBAPIError.instance("connect", (), e, psycopg.Error) from e
            try:
                yield conn
            except BaseException:
                if conn.broken or conn.closed:
                    conn.close()
                    self.close()  # the others most likely went with it
                else:
                    self._give_back(conn)
                raise
            self._give_back(conn)
        finally:
            self._slots.release()

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            self._idle.append(conn)


def hot_reads(database_url: str, size: int) -> HotReads | None:
    """HotReads on `database_url`'s PostgreSQL database (at most `size` connections); None for SQLite."""
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() != "postgresql":
        return None
    return HotReads(url.set(drivername="postgresql").render_as_string(hide_password=False), size)


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value
