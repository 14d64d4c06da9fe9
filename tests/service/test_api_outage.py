"""A dependency down is a 503 with Retry-After in the one error shape, never a 500: the database stopped (a
private PostgreSQL server this test stops), a database never migrated or behind the migrations, the broker
unreachable. /healthz reports each of them."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_helpers import free_port
from flask.testing import FlaskClient
from private_postgres import PrivatePostgres, private_postgres  # noqa: F401  (fixture)

from api import create_app
from genq.settings import Settings
from genq.store import migrate

PROMPT = {"prompt": "hi"}
JOB_ID = "8d4c3e0e-5b1a-4c1e-9c53-3a4c2f6f5d21"


def _client(database_url: str, broker_url: str) -> FlaskClient:
    return create_app(Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": broker_url})).test_client()


def _assert_unavailable(response, code: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, (response.status_code, response.get_data(as_text=True))
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]["message"]


def test_while_the_database_is_down_reads_and_writes_answer_503_and_work_again_after(
    private_postgres: PrivatePostgres, filesystem_broker_url: str  # noqa: F811
) -> None:
    url = private_postgres.create_database()
    migrate.upgrade(url)
    client = _client(url, filesystem_broker_url)
    job_id = client.post("/v1/jobs", json=PROMPT).get_json()["id"]
    private_postgres.stop()
    for response in (client.post("/v1/jobs", json=PROMPT), client.get(f"/v1/jobs/{job_id}"), client.get("/v1/jobs"),
                     client.post(f"/v1/jobs/{job_id}/cancel"), client.get(f"/v1/jobs/{job_id}/events")):
        _assert_unavailable(response, "database_unavailable")
    assert "database: unreachable" in _assert_unavailable(client.get("/healthz"), "database_unavailable")
    private_postgres.start()
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200  # the pool's dead connections are replaced
    assert client.post("/v1/jobs", json=PROMPT).status_code == 202
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_database_never_migrated_is_unhealthy_and_refuses_jobs_with_a_503_saying_what_to_run(
    kind: str, postgres_database: Callable[[], str], tmp_path: Path, filesystem_broker_url: str
) -> None:
    url = postgres_database() if kind == "postgresql" else f"sqlite:///{tmp_path / 'genq.db'}"
    client = _client(url, filesystem_broker_url)
    assert "genq db upgrade" in _assert_unavailable(client.get("/healthz"), "database_not_migrated")
    assert "genq db upgrade" in _assert_unavailable(client.post("/v1/jobs", json=PROMPT), "database_not_migrated")
    _assert_unavailable(client.get(f"/v1/jobs/{JOB_ID}"), "database_not_migrated")
    _assert_unavailable(client.get("/v1/jobs"), "database_not_migrated")
    migrate.upgrade(url)
    assert client.get("/healthz").status_code == 200 and client.post("/v1/jobs", json=PROMPT).status_code == 202


def test_a_database_behind_the_migrations_is_unhealthy(postgres_database: Callable[[], str],
                                                       filesystem_broker_url: str) -> None:
    url = postgres_database()
    migrate.upgrade(url, "0001_jobs")
    message = _assert_unavailable(_client(url, filesystem_broker_url).get("/healthz"), "database_not_migrated")
    assert "behind head" in message and "genq db upgrade" in message


def test_an_unreachable_broker_is_unhealthy_but_a_job_is_still_accepted(
    migrated_sqlite_url: str,
) -> None:
    client = _client(migrated_sqlite_url, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert "broker: unreachable" in _assert_unavailable(client.get("/healthz"), "broker_unavailable")
    accepted = client.post("/v1/jobs", json=PROMPT)
    assert accepted.status_code == 202 and accepted.get_json()["status"] == "queued"  # the relay publishes it later
