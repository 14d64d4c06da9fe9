"""A running genq service for client tests: the API over real HTTP (a thread) on a fresh PostgreSQL database,
a file-system broker and one `genq worker` process serving `models` (and webhooks)."""
from __future__ import annotations

from pathlib import Path

from e2e_helpers import ApiThread, Child

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store import migrate

START_TIMEOUT_S = 300


class LiveService:
    def __init__(self, database_url: str, tmp: Path, env: dict[str, str], worker_args: list[str]):
        migrate.upgrade(database_url)
        self.env = {"DATABASE_URL": database_url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'broker'}",
                    "GENQ_BATCH_SIZE": "4", "GENQ_EVENTS_POLL_MS": "50", **env}
        self.app = create_app(Settings.from_env(self.env))
        self.api = ApiThread(self.app)
        self.url = self.api.url
        self.worker = Child(["worker", *worker_args], self.env, cwd=tmp)
        try:
            self.worker.wait_for_line("ready in", START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()
        self.app.extensions[EXTENSION_KEY].db.dispose()  # type: ignore[attr-defined]
