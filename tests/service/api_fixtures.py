"""The API over real HTTP on a fresh database of its own (PostgreSQL or SQLite), publishing to a file-system
broker no worker reads: for API behaviour whose tests count jobs and must not see other tests' jobs."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_helpers import ApiThread
from sqlalchemy import update

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store import migrate
from genq.store.jobs import JobStore
from genq.store.schema import Job


@dataclass
class Api:
    url: str
    store: JobStore
    settings: Settings
    app: object

    def cancel_all_queued(self) -> None:
        """Take every queued job out of the queue (so a test's queue positions count only its own jobs)."""
        with self.store.sessions.begin() as session:
            session.execute(update(Job).where(Job.status == "queued").values(status="canceled"))


def fresh_database(kind: str, postgres_database: Callable[[], str], tmp: Path) -> str:
    url = postgres_database() if kind == "postgresql" else f"sqlite:///{tmp / 'genq.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def api(request: pytest.FixtureRequest, postgres_database: Callable[[], str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api")
    url = fresh_database(request.param, postgres_database, tmp)
    # queue positions counted on every read (not from a snapshot up to a second old): these tests move jobs
    # through the queue and read their positions at once (the snapshot: tests/service/test_queue_snapshot.py)
    settings = Settings.from_env({"DATABASE_URL": url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'broker'}",
                                  "GENQ_QUEUE_INFO_MAX_AGE_MS": "0"})
    app = create_app(settings)
    server = ApiThread(app)
    try:
        yield Api(server.url, app.extensions[EXTENSION_KEY].store, settings, app)
    finally:
        server.stop()
        app.extensions[EXTENSION_KEY].db.dispose()
