"""The API with keys required (GENQ_AUTH=keys), as two API processes would run it: two apps, each with its own
pools and caches, over real HTTP on one fresh PostgreSQL database, publishing to a file-system broker no
worker reads."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_helpers import ApiThread
from flask import Flask

from api import create_app
from api.services import EXTENSION_KEY, Services
from genq.settings import Settings
from genq.store import migrate
from genq.store.api_keys import ApiKeyStore


@dataclass
class KeyedApi:
    urls: list[str]  # two API processes' base URLs, one database
    services: Services
    keys: ApiKeyStore
    app: Flask

    @property
    def url(self) -> str:
        return self.urls[0]

    def new_key(self, name: str, **limits: Any) -> str:
        return self.keys.create(name, **limits)[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(url: str, key: str, body: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
    return requests.post(f"{url}/v1/jobs", json=body or {"prompt": "Hi"}, headers=bearer(key), timeout=30, **kw)


@pytest.fixture(scope="module")
def keyed_api(postgres_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedApi]:
    tmp: Path = tmp_path_factory.mktemp("keyed")
    url = postgres_database()
    migrate.upgrade(url)
    settings = Settings.from_env({"DATABASE_URL": url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'broker'}",
                                  "GENQ_AUTH": "keys", "GENQ_EVENTS_POLL_MS": "20", "GENQ_EVENTS_KEEPALIVE": "1",
                                  "GENQ_WEBHOOK_ALLOW": "127.0.0.1"})
    apps = [create_app(settings) for _ in range(2)]
    servers = [ApiThread(app) for app in apps]
    svc = apps[0].extensions[EXTENSION_KEY]
    try:
        yield KeyedApi([s.url for s in servers], svc, ApiKeyStore(svc.sessions), apps[0])
    finally:
        for server, app in zip(servers, apps, strict=True):
            server.stop()
            app.extensions[EXTENSION_KEY].db.dispose()
