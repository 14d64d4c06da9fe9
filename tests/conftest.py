"""Shared fixtures: real PostgreSQL (a fresh database per session), SQLite files, Redis, the filesystem broker.

PostgreSQL is reached at GENQ_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test; the
database there is used only to create and drop `genq_test_<random>` databases). Redis is reached at
GENQ_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); every test run uses its own key prefix.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from genq.settings import Settings
from genq.store import migrate
from genq.store.db import make_engine, make_session_factory, normalize_url
from genq.store.jobs import JobStore

POSTGRES_URL = os.environ.get("GENQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GENQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _admin_conninfo() -> str:
    return make_url(normalize_url(POSTGRES_URL)).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty PostgreSQL databases (URLs); every one is dropped when the session ends."""
    created: list[str] = []

    def make() -> str:
        name = f"genq_test_{secrets.token_hex(6)}"
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(normalize_url(POSTGRES_URL)).set(database=name).render_as_string(hide_password=False)

    yield make
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_postgresql_url(postgres_database: Callable[[], str]) -> str:
    url = postgres_database()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def migrated_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'genq.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database: each test using it runs once on PostgreSQL and once on SQLite."""
    return request.getfixturevalue(f"migrated_{request.param}_url")


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    engine = make_engine(database_url)
    yield JobStore(make_session_factory(engine))
    engine.dispose()


@pytest.fixture
def filesystem_broker_url(tmp_path: Path) -> str:
    return f"filesystem://{tmp_path / 'broker'}"


@pytest.fixture(scope="session")
def redis_key_prefix() -> Iterator[str]:
    """A key prefix owned by this test session; its keys are deleted at the end."""
    import redis

    prefix = f"genq-test-{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def settings(database_url: str, filesystem_broker_url: str) -> Settings:
    """Service settings on the test database and a private file-system broker, serving the default model."""
    return Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url})
