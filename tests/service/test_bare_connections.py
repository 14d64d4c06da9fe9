"""The API's statements on bare connections (genq/store/bare_connections.py, hot_reads.py, hot_insert.py) give
what the SQLAlchemy path gives: the same rows written, the same rows read, the same quota refusals, and a lost
connection fails one call as SQLAlchemy's OperationalError (the API's 503), the next one reconnecting."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import exc, select

from genq.lifecycle import Schedule
from genq.store.api_keys import ApiKeyStore, digest
from genq.store.bare_connections import BareConnections, bare_connections
from genq.store.db import make_engine, make_session_factory
from genq.store.jobs import JobStore
from genq.store.quotas import Quota, QuotaExceeded, Reservation
from genq.store.schema import ApiKey, ApiKeyUsage, Job, JobEvent

FIELDS: dict[str, Any] = {
    "model": "m", "input": {"messages": [{"role": "user", "content": "hé"}]}, "params": {"max_new_tokens": 7},
    "metadata": None, "webhook": "https://example.com/h", "webhook_events_filter": ["completed"],
    "schedule": Schedule(priority=3, ttl_seconds=60, max_attempts=2)}
VOLATILE = "- 'id' - 'created_at' - 'updated_at' - 'published_at' - 'expires_at' - 'owner'"


@pytest.fixture
def stores(migrated_postgresql_url: str) -> Iterator[tuple[JobStore, JobStore, BareConnections]]:
    engine = make_engine(migrated_postgresql_url)
    bare = bare_connections(migrated_postgresql_url, 2)
    assert bare is not None
    sessions = make_session_factory(engine)
    yield JobStore(sessions), JobStore(sessions, bare=bare), bare
    bare.close()
    engine.dispose()


def _row(bare: BareConnections, sql: str, job_id: str) -> object:
    with bare.connection() as conn:
        return conn.execute(sql, (job_id,)).fetchone()


def test_a_job_inserted_bare_is_the_row_the_orm_writes(stores: tuple[JobStore, JobStore, BareConnections]) -> None:
    orm, hot, bare = stores
    a, b = orm.create(**FIELDS), hot.create(**FIELDS)
    row_sql = f"SELECT to_jsonb(j) {VOLATILE}, metadata IS NULL FROM jobs j WHERE id = %s"
    assert _row(bare, row_sql, a.id) == _row(bare, row_sql, b.id)
    event_sql = "SELECT to_jsonb(e) - 'job_id' - 'created_at' FROM job_events e WHERE job_id = %s"
    assert _row(bare, event_sql, a.id) == _row(bare, event_sql, b.id) is not None


def test_a_job_read_bare_is_the_job_the_orm_reads(stores: tuple[JobStore, JobStore, BareConnections]) -> None:
    orm, hot, _ = stores
    job = orm.create(**FIELDS)
    with orm.sessions() as session:
        want = session.get(Job, job.id)
    got = hot.get(job.id)
    assert got is not None and want is not None
    for column in Job.__table__.columns:
        attr = Job.__mapper__.get_property_by_column(column).key
        assert getattr(got, attr) == getattr(want, attr), attr
    assert got.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert hot.get("nope") is None and hot.get("0" * 36) is None


def test_a_key_read_bare_is_the_key(stores: tuple[JobStore, JobStore, BareConnections]) -> None:
    orm, _, bare = stores
    keys, hot_keys = ApiKeyStore(orm.sessions), ApiKeyStore(orm.sessions, bare=bare)
    info, value = keys.create(f"bare-{digest('x')[:6]}-{id(keys)}", max_concurrent=3)
    assert hot_keys.find(value) == keys.find(value) == info
    assert hot_keys.find(value + "x") is None


def test_a_key_and_a_job_read_together_are_the_key_and_the_job_read_apart(
        stores: tuple[JobStore, JobStore, BareConnections]) -> None:
    orm, hot, bare = stores
    keys, hot_keys = ApiKeyStore(orm.sessions), ApiKeyStore(orm.sessions, bare=bare)
    (mine, value), (other, _) = (keys.create(f"pair-{n}-{id(keys)}", tokens_per_day=9) for n in (1, 2))
    job, theirs = orm.create(**{**FIELDS, "owner": mine.id}), orm.create(**{**FIELDS, "owner": other.id})
    for job_id in (job.id, theirs.id):  # another key's job is read too: the view checks its owner
        key, got = hot_keys.find_with_job(value, job_id)  # type: ignore[misc]
        want = hot.get(job_id)
        assert key == mine and got is not None and want is not None
        assert [getattr(got, c.key) for c in Job.__mapper__.column_attrs] == \
            [getattr(want, c.key) for c in Job.__mapper__.column_attrs]
    assert hot_keys.find_with_job(value, "0" * 36) == (mine, None)  # no such job
    assert hot_keys.find_with_job(value, "nope") == (mine, None)  # not an id
    assert hot_keys.find_with_job(value + "x", job.id) == (None, None)  # no such key: nor its job
    assert hot_keys.find_with_job("nope", job.id) == (None, None)
    assert keys.find_with_job(value, job.id) is None  # no bare connections (SQLite): not read together


@pytest.mark.parametrize("limits,reserve,limit", [({"max_concurrent": 1}, (2, 0), "concurrent"),
                                                   ({"tokens_per_day": 10}, (1, 11), "tokens"),
                                                   ({"tokens_per_day": 10}, (1, 6), "tokens")])
def test_quota_refusals_are_the_same_and_insert_nothing(stores: tuple[JobStore, JobStore, BareConnections],
                                                       limits: dict[str, int], reserve: tuple[int, int],
                                                       limit: str) -> None:
    orm, hot, _ = stores
    key, _ = ApiKeyStore(orm.sessions).create(f"q{len(str(limits))}{reserve[1]}-{id(limits)}", **limits)
    quota = Quota(key.id, key.max_concurrent, key.tokens_per_day)
    jobs, tokens = reserve
    if tokens == 6:  # a first submission takes 6 of the 10: the second one's 6 would pass the limit
        hot.create(**FIELDS, reservation=Reservation(quota, 1, 6))
    errors = []
    for store in (orm, hot):
        with pytest.raises(QuotaExceeded) as caught:
            store.create(**{**FIELDS, "model": f"refused-{key.id}"}, reservation=Reservation(quota, jobs, tokens))
        errors.append(caught.value)
    assert [(e.limit, e.remaining, str(e)) for e in errors][0] == [(e.limit, e.remaining, str(e)) for e in errors][1]
    assert errors[0].limit == limit
    with orm.sessions() as session:
        assert session.scalars(select(Job).where(Job.model == f"refused-{key.id}")).first() is None
        used = session.scalar(select(ApiKeyUsage.tokens).where(ApiKeyUsage.key_id == key.id))
        assert used == (6 if tokens == 6 else None)


def test_a_lost_connection_fails_one_call_as_operational_error(
        stores: tuple[JobStore, JobStore, BareConnections], migrated_postgresql_url: str) -> None:
    orm, hot, bare = stores
    job = hot.create(**FIELDS)
    with bare.connection() as conn:
        pid = conn.info.backend_pid
    admin = migrated_postgresql_url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(exc.OperationalError):
        hot.get(job.id)
    assert hot.get(job.id) is not None  # a new connection
    with orm.sessions() as session:
        assert session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).one().seq == 1


@pytest.mark.parametrize("limits,tokens,accepted,limit", [({"max_concurrent": 10}, 0, 10, "concurrent"),
                                                          ({"tokens_per_day": 30}, 6, 5, "tokens")])
def test_concurrent_submissions_of_one_key_are_grouped_and_exactly_those_that_fit_are_accepted(
        stores: tuple[JobStore, JobStore, BareConnections], monkeypatch: pytest.MonkeyPatch,
        limits: dict[str, int], tokens: int, accepted: int, limit: str) -> None:
    import threading

    from genq.store import hot_insert

    orm, hot, _ = stores
    key, _ = ApiKeyStore(orm.sessions).create(f"group-{limit}-{id(limits)}", **limits)
    quota = Quota(key.id, key.max_concurrent, key.tokens_per_day)
    writes: list[int] = []
    real_write = hot_insert.HotInsert._write

    def counted(self: hot_insert.HotInsert, group: list) -> object:  # type: ignore[type-arg]
        writes.append(len(group))
        return real_write(self, group)

    monkeypatch.setattr(hot_insert.HotInsert, "_write", counted)
    start = threading.Barrier(30)
    outcomes: list[str] = []

    def submit() -> None:
        start.wait(10)
        try:
            hot.create(**{**FIELDS, "model": f"group-{key.id}"}, reservation=Reservation(quota, 1, tokens))
            outcomes.append("ok")
        except QuotaExceeded as e:
            outcomes.append(e.limit)

    threads = [threading.Thread(target=submit) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == sorted(["ok"] * accepted + [limit] * (30 - accepted))
    assert max(writes) > 1  # some were written together
    with orm.sessions() as session:
        jobs = session.scalars(select(Job).where(Job.model == f"group-{key.id}")).all()
        assert len(jobs) == accepted
        events = session.scalars(select(JobEvent).where(JobEvent.job_id.in_([j.id for j in jobs]))).all()
        assert len(events) == accepted
        used = session.scalar(select(ApiKeyUsage.tokens).where(ApiKeyUsage.key_id == key.id))
        assert used == (accepted * tokens if tokens else None)
        live = session.scalar(select(ApiKey.live_jobs).where(ApiKey.id == key.id))  # the key's unfinished jobs
        assert live == (accepted if key.max_concurrent else 0)
