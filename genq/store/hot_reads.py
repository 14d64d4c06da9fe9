"""The API's reads of (nearly) every request on bare connections (genq/store/bare_connections.py): an API key
by its digest, a job by its id, and both in one statement for a poll (`GET /v1/jobs/{id}`: one round trip
instead of two); each one prepared statement (prepared on a connection's first use of it)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import configure_mappers

from genq.ids import is_id
from genq.store.bare_connections import BareConnections, utc
from genq.store.schema import ApiKey, Job


def _columns(model: Any) -> tuple[list[str], list[str]]:
    """A mapped class's attribute names and their columns' quoted SQL names, in the same order."""
    attrs = [(a.key, a.columns[0].name) for a in inspect(model).column_attrs]
    return [key for key, _ in attrs], [f'"{name}"' for _, name in attrs]


configure_mappers()  # the instrumented attributes an instance made without a session reads through
_JOB_ATTRS, _JOB_COLUMNS = _columns(Job)
_JOB_SQL = f"SELECT {', '.join(_JOB_COLUMNS)} FROM {Job.__tablename__} WHERE id = %s"
_KEY_ATTRS = ["id", "name", "max_concurrent", "tokens_per_day", "created_at", "revoked_at"]
_KEY_SQL = f"SELECT {', '.join(_KEY_ATTRS)} FROM {ApiKey.__tablename__} WHERE key_hash = %s"
# the key, and the job beside it (all NULL when there is no such job); the job's owner is checked by the caller
_KEY_AND_JOB_SQL = (f"SELECT {', '.join(f'k.{a}' for a in _KEY_ATTRS)}, "
                    f"{', '.join(f'j.{c}' for c in _JOB_COLUMNS)}, j.id IS NOT NULL "
                    f"FROM {ApiKey.__tablename__} k LEFT JOIN {Job.__tablename__} j ON j.id = %s "
                    f"WHERE k.key_hash = %s")


class HotReads:
    def __init__(self, connections: BareConnections):
        self._connections = connections

    def job(self, job_id: str) -> Job | None:
        """The job (a transient row, readable as one loaded by a session), or None (a malformed id too)."""
        if not is_id(job_id):
            return None
        row = self._one(_JOB_SQL, job_id)
        return _job(row) if row is not None else None

    def key(self, key_hash: str) -> dict[str, Any] | None:
        """The API key whose digest is `key_hash`: its id, name, quotas, created_at and revoked_at."""
        row = self._one(_KEY_SQL, key_hash)
        return _key(row) if row is not None else None

    def key_and_job(self, key_hash: str, job_id: str) -> tuple[dict[str, Any] | None, Job | None]:
        """`key(key_hash)` and `job(job_id)`, read in one statement (one snapshot); the job whoever owns it."""
        if not is_id(job_id):
            return self.key(key_hash), None
        row = self._one(_KEY_AND_JOB_SQL, job_id, key_hash)
        if row is None:
            return None, None
        n = len(_KEY_ATTRS)
        return _key(row[:n]), _job(row[n:-1]) if row[-1] else None

    def _one(self, sql: str, *params: str) -> tuple[Any, ...] | None:
        with self._connections.connection() as conn:
            return conn.execute(sql, params, prepare=True).fetchone()


def _key(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_KEY_ATTRS, map(utc, row), strict=True))


def _job(row: tuple[Any, ...]) -> Job:
    # as a session loads a row: straight into the instance's dict, without the constructor's attribute events
    # (a tenth of the cost)
    job = inspect(Job).class_manager.new_instance()
    job.__dict__.update(zip(_JOB_ATTRS, map(utc, row), strict=True))
    return job
