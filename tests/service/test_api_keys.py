"""API keys: `genq keys create|list|revoke`, stored hashed; `Authorization: Bearer <key>` required when
GENQ_AUTH=keys (the default off a loopback address); a revoked key refused at once by every API process."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from key_fixtures import KeyedApi, bearer, keyed_api, submit  # noqa: F401  (fixture)
from sqlalchemy import select, text

from api.auth import auth_required
from genq.store import migrate
from genq.store.api_keys import ApiKeyStore, digest
from genq.store.db import make_engine, make_session_factory
from genq.store.schema import ApiKey

ROOT = Path(__file__).resolve().parents[2]


def _genq(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "genq", "keys", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_keys_create_prints_the_key_last_and_stores_only_its_digest(postgres_database: Callable[[], str]) -> None:
    url = postgres_database()
    migrate.upgrade(url)
    made = _genq("create", "team-a", "--max-concurrent", "3", "--tokens-per-day", "5000", database_url=url)
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip().splitlines()[-1]
    assert value.startswith("genq_") and len(value) >= 40
    assert value not in made.stderr and made.stdout.count(value) == 1  # printed once, never logged

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
        assert value not in dump and digest(value) in dump
        with make_session_factory(engine)() as session:
            row = session.scalars(select(ApiKey)).one()
        assert (row.name, row.max_concurrent, row.tokens_per_day) == ("team-a", 3, 5000)
    finally:
        engine.dispose()

    listed = _genq("list", database_url=url)
    assert listed.returncode == 0 and "team-a" in listed.stdout and "5000" in listed.stdout
    assert value not in listed.stdout
    assert _genq("create", "team-a", database_url=url).returncode == 1  # names are unique
    assert _genq("revoke", "team-a", database_url=url).returncode == 0
    assert _genq("revoke", "team-a", database_url=url).returncode == 1  # already revoked
    assert "team-a" in _genq("list", database_url=url).stdout


@pytest.mark.parametrize(("mode", "host", "required"), [
    (None, "127.0.0.1", False), (None, "::1", False), (None, "localhost", False),
    (None, "0.0.0.0", True), (None, "10.1.2.3", True), (None, "api.internal", True),
    ("off", "0.0.0.0", False), ("keys", "127.0.0.1", True),
])
def test_keys_are_required_unless_off_and_off_is_the_default_only_on_loopback(
    mode: str | None, host: str, required: bool
) -> None:
    assert auth_required(mode, host) is required


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer genq_nope",
                                    "Bearer not-a-genq-key", "Bearer " + "x" * 5000])
def test_a_request_without_a_valid_key_is_401_with_a_bearer_challenge(keyed_api: KeyedApi, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/models"),
                         ("GET", "/v1/webhooks/secret")):
        r = requests.request(method, keyed_api.url + path, headers=headers, json={"prompt": "Hi"}, timeout=10)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] in ("unauthenticated", "invalid_api_key")
        assert r.json()["error"]["field"] == "Authorization"


def test_health_and_the_openapi_document_need_no_key(keyed_api: KeyedApi) -> None:
    assert requests.get(keyed_api.url + "/healthz", timeout=10).status_code == 200
    document = requests.get(keyed_api.url + "/v1/openapi.json", timeout=10).json()
    assert document["components"]["securitySchemes"]["apiKey"] == {**document["components"]["securitySchemes"][
        "apiKey"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"apiKey": []}]


def test_a_key_works_and_a_revoked_key_is_refused_at_once_by_every_api_process(keyed_api: KeyedApi) -> None:
    key = keyed_api.new_key("revoke-me")
    for url in keyed_api.urls:  # each process has read the key: it works in both
        assert submit(url, key).status_code == 202
        assert requests.get(url + "/v1/jobs", headers=bearer(key), timeout=10).status_code == 200
    assert ApiKeyStore(keyed_api.services.sessions).revoke("revoke-me")
    for url in keyed_api.urls:
        r = requests.get(url + "/v1/jobs", headers=bearer(key), timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == "api_key_revoked", r.text
        assert submit(url, key).status_code == 403


def test_the_open_api_logs_that_it_is_open(migrated_sqlite_url: str, filesystem_broker_url: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    from api import create_app
    from genq.settings import Settings

    with caplog.at_level("INFO", logger="api.auth"):
        create_app(Settings.from_env({"DATABASE_URL": migrated_sqlite_url, "GENQ_BROKER_URL": filesystem_broker_url}))
    assert any("OPEN" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    caplog.clear()
    with caplog.at_level("INFO", logger="api.auth"):
        create_app(Settings.from_env({"DATABASE_URL": migrated_sqlite_url, "GENQ_BROKER_URL": filesystem_broker_url,
                                      "GENQ_HOST": "0.0.0.0"}))
    assert not any("OPEN" in r.getMessage() for r in caplog.records)
