"""The live API against its own OpenAPI document, fuzzed by schemathesis: no server error, and every status,
content type, body and declared header as documented.

The app is served over real HTTP on a private PostgreSQL database, publishing to Redis under a key prefix only
this test uses, with API keys required (GENQ_AUTH=keys): every fuzzed request carries a valid key, so the
fuzzing reaches past authentication, and a second key's requests check the 401/403 answers too.
No worker runs, so jobs stay queued. Fuzzed ids name nothing, so the reads of existing objects
(a job, its deliveries and event stream, a batch and its results) are checked by a second test with real ids.
An event stream stays open while its job is live: schemathesis reads one for at most `request-timeout` seconds.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
import redis
import requests
import schemathesis
from e2e_helpers import REDIS_URL, ApiThread  # not from conftest: conftest names clash across folders
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from api.batches import JSONL_TYPES
from api.openapi import build_document
from api.services import Services
from genq.catalog import Catalog
from genq.settings import Settings
from genq.store import migrate

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 40
REDIS_PREFIX = f"genq-test-openapi-{secrets.token_hex(4)}:"
WEBHOOK = "http://127.0.0.1:9/hook"  # allowed below; no delivery is attempted (no worker)

# A JSONL body is documented as a string (one JSON object per line): sent as its UTF-8 text.
schemathesis.serializer.alias(list(JSONL_TYPES), "text/plain")


def _settings(database_url: str) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": database_url, "GENQ_BROKER_URL": REDIS_URL, "GENQ_BROKER_KEY_PREFIX": REDIS_PREFIX,
        "GENQ_EVENTS_POLL_MS": "20", "GENQ_WEBHOOK_ALLOW": "127.0.0.1", "GENQ_AUTH": "keys",
    })


# The document as the test's service serves it (the fixture checks that it does), loaded at import so that
# schemathesis makes one test per operation.
_DOCUMENT_SETTINGS = _settings("sqlite://")
DOCUMENT = build_document(_DOCUMENT_SETTINGS, [m.name for m in Catalog(_DOCUMENT_SETTINGS).all()])
# `Prefer: wait=N` holds a request N seconds when no worker finishes the job: the fuzzer picks from these
PREFER_VALUES = ["wait=0", "wait=0, respond-async", "wait=x", "wait=-1", "wait=9999999", "respond-async", ""]
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    "request-timeout": 10,  # a loaded CI machine; no fuzzed request may wait on a worker
    "dictionaries": {"prefer": {"values": PREFER_VALUES}},
    "parameters": {"header.Prefer": {"dictionary": "prefer", "probability": 1.0}},
}))
# The OpenAI-compatible surface answers a completion when a worker has made it (none runs here): it is tested
# with the `openai` client instead (test_openai_api.py, test_e2e_openai.py).
schema = schema.exclude(path_regex="^/openai/")


AUTH: dict[str, str] = {}  # the Authorization header of the key every request carries (set by `live`)


@pytest.fixture(scope="module")
def live(postgres_database: Callable[[], str]) -> Iterator[tuple[str, Services]]:
    """(base URL, the app's services) of the API on its own database and Redis prefix; AUTH holds a key of it
    with quotas (so the fuzzer meets 429s too)."""
    database_url = postgres_database()
    migrate.upgrade(database_url)
    app = create_app(_settings(database_url))
    server = ApiThread(app)
    assert requests.get(f"{server.url}/v1/openapi.json", timeout=10).json() == DOCUMENT
    svc: Services = app.extensions["genq"]
    AUTH["Authorization"] = "Bearer " + svc.api_keys.create("fuzz", max_concurrent=1000, tokens_per_day=10**7)[1]
    yield server.url, svc
    server.stop()
    app.extensions["genq"].db.dispose()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{REDIS_PREFIX}*"))
    if keys:
        client.delete(*keys)


@schema.parametrize()
@hypothesis.settings(database=None)
def test_the_api_conforms_to_its_openapi_document(case: schemathesis.Case, live: tuple[str, Services]) -> None:
    case.call_and_validate(base_url=live[0], checks=CHECKS, headers=AUTH)


def _call(url: str, path: str, method: str = "GET", **parts: Any) -> Any:
    case = schema[path][method].Case(**parts)
    return case.call_and_validate(base_url=url, checks=CHECKS, headers=AUTH)


def test_requests_without_a_valid_key_conform_to_the_document(live: tuple[str, Services]) -> None:
    url, svc = live
    revoked = "Bearer " + svc.api_keys.create("revoked-too")[1]
    svc.api_keys.revoke("revoked-too")
    for auth in ({}, {"Authorization": "Bearer genq_nothing"}, {"Authorization": "Basic eDp5"},
                 {"Authorization": revoked}):
        for path, method in (("/v1/jobs", "GET"), ("/v1/webhooks/secret", "GET"), ("/v1/models", "GET")):
            response = schema[path][method].Case().call_and_validate(base_url=url, checks=CHECKS, headers=auth)
            assert response.status_code in (401, 403)
        job = schema["/v1/jobs"]["POST"].Case(body={"prompt": "Hi"}, media_type="application/json")
        assert job.call_and_validate(base_url=url, checks=CHECKS, headers=auth).status_code in (401, 403)


def test_an_answer_over_a_quota_conforms_to_the_document(live: tuple[str, Services]) -> None:
    url, svc = live
    auth = {"Authorization": "Bearer " + svc.api_keys.create("tight", max_concurrent=1)[1]}
    case = schema["/v1/jobs"]["POST"].Case(body={"prompt": "Hi"}, media_type="application/json")
    assert case.call_and_validate(base_url=url, checks=CHECKS, headers=auth).status_code == 202
    assert case.call_and_validate(base_url=url, checks=CHECKS, headers=auth).status_code == 429


def test_reads_of_existing_objects_conform_to_the_document(live: tuple[str, Services]) -> None:
    url, svc = live
    job = _call(url, "/v1/jobs", "POST", body={"prompt": "Hi", "webhook": WEBHOOK, "metadata": {"k": "v"}},
                media_type="application/json").json()
    batch = _call(url, "/v1/batches", "POST", body='{"custom_id": "a", "prompt": "x"}\n',
                  media_type="application/jsonl", query={"metadata": '{"run": 1}'}).json()
    assert job["status"] == "queued" and batch["counts"]["queued"] == 1
    _call(url, "/v1/jobs/{job_id}", path_parameters={"job_id": job["id"]})
    _call(url, "/v1/batches/{batch_id}", path_parameters={"batch_id": batch["id"]})
    results = _call(url, "/v1/batches/{batch_id}/results", path_parameters={"batch_id": batch["id"]})
    assert results.text.count("\n") == 1

    svc.store.fail(job["id"], "test_failure", "failed by the test")  # final: fires the webhook, ends the stream
    events = _call(url, "/v1/jobs/{job_id}/events", path_parameters={"job_id": job["id"]})
    assert [line for line in events.text.splitlines() if line.startswith("event:")] == [
        "event: status", "event: status", "event: done"]
    _call(url, "/v1/jobs/{job_id}/events", path_parameters={"job_id": job["id"]}, headers={"Last-Event-ID": "1"})
    deliveries = _call(url, "/v1/jobs/{job_id}/deliveries", path_parameters={"job_id": job["id"]}).json()
    assert [d["event"] for d in deliveries["data"]] == ["job.completed"]
    redeliver = _call(url, "/v1/jobs/{job_id}/deliveries/{delivery_id}/redeliver", "POST",
                      path_parameters={"job_id": job["id"], "delivery_id": deliveries["data"][0]["id"]})
    assert redeliver.status_code == 409  # still pending: no worker delivers it
    _call(url, "/v1/webhooks/secret")
    _call(url, "/v1/webhooks/secret/rotate", "POST")
    assert _call(url, "/v1/webhooks/secret").json()["previous"]  # the one before still signs


def test_the_lifecycle_answers_conform_to_the_document(live: tuple[str, Services]) -> None:
    url, _ = live
    key = {"Idempotency-Key": f"openapi-{secrets.token_hex(4)}", "Prefer": "wait=0"}
    body = {"prompt": "Hi", "priority": 9, "ttl_seconds": 600, "metadata": {"suite": "openapi"}}
    first = _call(url, "/v1/jobs", "POST", body=body, media_type="application/json", headers=key)
    again = _call(url, "/v1/jobs", "POST", body=body, media_type="application/json", headers=key)
    # (schemathesis' responses list each header's values under its lower-case name)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == ["true"]
    assert first.headers["preference-applied"] == ["wait=0"] and first.json()["queue_position"] == 0

    page = _call(url, "/v1/jobs", query={"status": ["queued"], "metadata[suite]": "openapi", "limit": 1}).json()
    assert [j["id"] for j in page["data"]] == [first.json()["id"]] and page["has_more"] is False
    _call(url, "/v1/jobs", "POST", body={"prompt": "another"}, media_type="application/json")
    cursor = _call(url, "/v1/jobs", query={"limit": 1}).json()["next_cursor"]
    assert _call(url, "/v1/jobs", query={"limit": 1, "cursor": cursor}).json()["data"]

    job_id = {"job_id": first.json()["id"]}
    assert _call(url, "/v1/jobs/{job_id}/cancel", "POST", path_parameters=job_id).json()["status"] == "canceled"
    assert _call(url, "/v1/jobs/{job_id}/cancel", "POST", path_parameters=job_id).status_code == 200
