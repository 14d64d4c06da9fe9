"""A dashboard on a fresh database of its own (PostgreSQL or SQLite), through Flask's test client, with
helpers to log in and to read the CSRF token a page carries."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import fresh_database
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store.admin_users import AdminUsers
from genq.store.jobs import JobStore

ADMIN, VIEWER, PASSWORD = "alice", "victor", "correct horse battery"


@dataclass
class Dashboard:
    app: Flask
    store: JobStore
    settings: Settings

    @property
    def users(self) -> AdminUsers:
        return AdminUsers(self.store.sessions)

    def client(self) -> FlaskClient:
        return self.app.test_client()

    def logged_in(self, username: str = ADMIN) -> FlaskClient:
        client = self.client()
        page = client.get("/admin/login")
        response = client.post("/admin/login", data={"username": username, "password": PASSWORD,
                                                     "csrf_token": csrf(page.text)})
        assert response.status_code == 302, response.text
        return client


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, "no csrf_token in the page"
    return match.group(1)


def make_dashboard(url: str, tmp: Path, **env: str) -> Dashboard:
    settings = Settings.from_env({"DATABASE_URL": url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'broker'}", **env})
    app = create_app(settings)
    return Dashboard(app, app.extensions[EXTENSION_KEY].store, settings)


@pytest.fixture(params=["postgresql", "sqlite"])
def dashboard(request: pytest.FixtureRequest, postgres_database: Callable[[], str],
              tmp_path: Path) -> Iterator[Dashboard]:
    """A dashboard with no user yet."""
    d = make_dashboard(fresh_database(request.param, postgres_database, tmp_path), tmp_path)
    yield d
    d.app.extensions[EXTENSION_KEY].db.dispose()


@pytest.fixture
def with_users(dashboard: Dashboard) -> Dashboard:
    dashboard.users.put(ADMIN, PASSWORD, "admin")
    dashboard.users.put(VIEWER, PASSWORD, "viewer")
    return dashboard


def new_job(d: Dashboard, **fields: Any) -> str:
    return d.store.create(model=d.settings.default_model, input={"prompt": "hi"}, params={"max_new_tokens": 4},
                          **fields).id
