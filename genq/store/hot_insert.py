"""JobStore.create on a bare connection (genq/store/bare_connections.py): the job's row, its first event and
its key's quota reservation (genq/store/quotas.py, the same statements) sent together in one pipelined
transaction, then the commit: two round trips where the ORM's flushes, the reservation and the commit take
seven, and none of the unit of work's CPU. The rows are the ones the ORM would write: every column set on the
built objects, JSON columns as JSON (None as JSON null, as SQLAlchemy's JSON type stores it)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, inspect

from genq.store.quotas import Reservation, concurrent_exceeded, day_of, tokens_exceeded
from genq.store.schema import ApiKey, ApiKeyUsage, Base, Job, JobEvent

_KEYS, _USAGE = ApiKey.__tablename__, ApiKeyUsage.__tablename__
_RAISE_LIVE = (f"UPDATE {_KEYS} SET live_jobs = live_jobs + %(n)s "
               f"WHERE id = %(key_id)s AND live_jobs + %(n)s <= max_concurrent RETURNING live_jobs")
_ADD_TOKENS = (f"INSERT INTO {_USAGE} (key_id, day, tokens) VALUES (%(key_id)s, %(day)s, %(tokens)s) "
               f"ON CONFLICT (key_id, day) DO UPDATE SET tokens = {_USAGE}.tokens + excluded.tokens "
               f"WHERE {_USAGE}.tokens + excluded.tokens <= %(limit)s RETURNING tokens")
_LIVE = f"SELECT live_jobs FROM {_KEYS} WHERE id = %s"
_USED = f"SELECT tokens FROM {_USAGE} WHERE key_id = %s AND day = %s"


class HotInsert:
    def __init__(self, connections: Any):  # BareConnections
        self._connections = connections

    def create(self, job: Job, event: JobEvent, reservation: Reservation | None) -> None:
        """Insert `job` and its first `event` and reserve `reservation` in one transaction; raises
        QuotaExceeded (nothing inserted) as the ORM path does, IntegrityError and OperationalError as
        SQLAlchemy's."""
        with self._connections.connection() as conn, conn.pipeline(), conn.transaction():
            for row in (job, event):
                sql, values = _insert(row)
                conn.execute(sql, values, prepare=True)
            if reservation is not None:
                _reserve(conn, reservation, job.created_at)


def _reserve(conn: psycopg.Connection[Any], r: Reservation, now: datetime) -> None:
    """quotas.reserve's two conditional statements, sent together, their answers read after."""
    quota = r.quota
    live = tokens = None
    if quota.max_concurrent is not None:
        live = conn.execute(_RAISE_LIVE, {"n": r.jobs, "key_id": quota.key_id}, prepare=True)
    day = day_of(now)
    if quota.tokens_per_day is not None and r.tokens <= quota.tokens_per_day:
        tokens = conn.execute(_ADD_TOKENS, {"key_id": quota.key_id, "day": day, "tokens": r.tokens,
                                            "limit": quota.tokens_per_day}, prepare=True)
    if live is not None and live.fetchone() is None:
        before = conn.execute(_LIVE, (quota.key_id,)).fetchone()
        raise concurrent_exceeded(quota, (before[0] if before else 0) or 0, r.jobs)
    if quota.tokens_per_day is not None and (tokens is None or tokens.fetchone() is None):
        used = conn.execute(_USED, (quota.key_id, day)).fetchone()
        raise tokens_exceeded(quota, (used[0] if used else 0) or 0, r.tokens, now)


_SQL: dict[tuple[str, tuple[str, ...]], tuple[str, list[tuple[str, bool]]]] = {}


def _insert(row: Base) -> tuple[str, list[Any]]:
    """The INSERT of `row`'s set columns and its values (the statement built once per table and columns)."""
    table = row.__tablename__
    state = row.__dict__
    key = (table, tuple(k for k in state if k != "_sa_instance_state"))
    built = _SQL.get(key)
    if built is None:
        props = [a for a in inspect(type(row)).column_attrs if a.key in state]
        columns = ", ".join(f'"{a.columns[0].name}"' for a in props)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(props))})"
        built = _SQL[key] = sql, [(a.key, isinstance(a.columns[0].type, JSON)) for a in props]
    sql, attrs = built
    return sql, [Jsonb(state[k]) if is_json else state[k] for k, is_json in attrs]
