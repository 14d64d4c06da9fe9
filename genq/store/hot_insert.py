"""JobStore.create on bare connections (genq/store/bare_connections.py), with the submissions that one API
process makes at the same time written together: one transaction, one quota reservation per API key, one
commit (one WAL flush) for all of them.

Why together: a key with quotas has one row that each of its submissions updates (genq/store/quotas.py, the
same statements here), locked from that update to the end of the commit's WAL flush; one transaction a job,
one key's submissions go one after another at about 1 / (commit latency), whatever the processes and
threads. Grouped, one flush serves every job that arrived while the last one was under way.

A request thread hands its job over and waits (in `wait()`, which gives up its turn of the API's gate); one
committer thread per process takes everything waiting and writes it in one pipelined transaction: each job's
row and first event, then, key by key in id order (so two processes' groups lock keys in the same order),
one reservation for all that key's jobs in the group, then the commit; two round trips in all. If a key's
reservation for several jobs fails, each of those jobs is then written alone in the next rounds, so exactly
the ones that fit are accepted, as one at a time would be; the other jobs of the group go again together.
Any other error fails every job of the group (none was written), each request raising it as it would alone.
The rows are the ones the ORM would write: every column set on the built objects, JSON columns as JSON (None
as JSON null, as SQLAlchemy's JSON type stores it).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, inspect

from genq.store.quotas import (
    QuotaExceeded,
    Reservation,
    concurrent_exceeded,
    day_of,
    postgres_reservation_sql,
    tokens_exceeded,
)
from genq.store.schema import ApiKey, ApiKeyUsage, Base, Job, JobEvent

MAX_GROUP = 500  # jobs in one transaction at most
_KEYS, _USAGE = ApiKey.__tablename__, ApiKeyUsage.__tablename__
_RAISE_LIVE, _ADD_TOKENS = postgres_reservation_sql()
_LIVE = f"SELECT live_jobs FROM {_KEYS} WHERE id = %s"
_USED = f"SELECT tokens FROM {_USAGE} WHERE key_id = %s AND day = %s"


@dataclass(eq=False)
class _Pending:
    job: Job
    event: JobEvent
    reservation: Reservation | None
    alone: bool = False  # its key's reservation failed in a group: written by itself from now on
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class HotInsert:
    def __init__(self, connections: Any, wait: Callable[[], AbstractContextManager[None]] = nullcontext):
        """`connections`: BareConnections; `wait`: entered while a request thread waits for its group."""
        self._connections = connections
        self._wait = wait
        self._cond = threading.Condition()
        self._waiting: list[_Pending] = []
        self._committer: threading.Thread | None = None

    def create(self, job: Job, event: JobEvent, reservation: Reservation | None) -> None:
        """Insert `job` and its first `event` and reserve `reservation`, committed when this returns; raises
        QuotaExceeded (nothing inserted) as the ORM path does, IntegrityError and OperationalError as
        SQLAlchemy's."""
        pending = _Pending(job, event, reservation)
        with self._cond:
            self._waiting.append(pending)
            if self._committer is None or not self._committer.is_alive():
                self._committer = threading.Thread(target=self._commit_forever, name="genq-group-commit",
                                                   daemon=True)
                self._committer.start()
            self._cond.notify()
        with self._wait():
            pending.done.wait()
        if pending.error is not None:
            raise pending.error

    def _commit_forever(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            for alone in (p for p in group if p.alone):
                self._commit([alone])
            together = [p for p in group if not p.alone]
            if together:
                self._commit(together)

    def _commit(self, group: list[_Pending]) -> None:
        try:
            refused = self._write(group)
        except BaseException as e:  # noqa: BLE001  # every job of the group fails with it; the committer goes on
            for p in group:
                p.error = e
                p.done.set()
            return
        if refused is None:
            for p in group:
                p.done.set()
            return
        again = []
        for p in group:  # rolled back: a refused key's jobs go alone (one of them alone: refused), the rest again
            if p.reservation is not None and p.reservation.quota.key_id in refused:
                if len(group) == 1:
                    p.error = refused[p.reservation.quota.key_id]
                    p.done.set()
                    continue
                p.alone = True
            again.append(p)
        with self._cond:
            self._waiting[:0] = again

    def _write(self, group: list[_Pending]) -> dict[str, QuotaExceeded] | None:
        """Write the group in one transaction; the keys whose reservation failed (rolled back), or None."""
        refused: dict[str, QuotaExceeded] = {}
        with self._connections.connection() as conn, conn.pipeline():
            with conn.transaction() as tx:
                for p in group:
                    for row in (p.job, p.event):
                        sql, values = _insert(row)
                        conn.execute(sql, values, prepare=True)
                for reservation, now in _per_key(group):
                    try:
                        _reserve(conn, reservation, now)
                    except QuotaExceeded as e:
                        refused[reservation.quota.key_id] = e
                        if len(group) > 1:
                            break  # rolled back anyway: the others are checked when they go again
                if refused:
                    raise psycopg.Rollback(tx)
        return refused or None


def _per_key(group: list[_Pending]) -> Iterator[tuple[Reservation, datetime]]:
    """One reservation per key (and UTC day) for all its jobs of the group, in key order."""
    summed: dict[tuple[str, str], tuple[Reservation, datetime]] = {}
    for p in group:
        r = p.reservation
        if r is None:
            continue
        key = (r.quota.key_id, day_of(p.job.created_at))
        if key in summed:
            total, now = summed[key]
            summed[key] = Reservation(total.quota, total.jobs + r.jobs, total.tokens + r.tokens), now
        else:
            summed[key] = r, p.job.created_at
    for key in sorted(summed):
        yield summed[key]


def _reserve(conn: psycopg.Connection[Any], r: Reservation, now: datetime) -> None:
    """quotas.reserve's two conditional statements, sent together, their answers read after; raises
    QuotaExceeded as it does."""
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
