"""Isolation between API keys, checked on every route of the app (the route list drives it, so a new route
fails here until it says how it is scoped): a key sees, lists, streams, cancels and downloads only its own
jobs, batches and deliveries; another key's answer 404 exactly as a missing one; each key has its own
webhook secret, and its deliveries are signed with it."""
from __future__ import annotations

import re
import uuid

import requests
from e2e_helpers import wait_until
from key_fixtures import KeyedApi, bearer, keyed_api, submit  # noqa: F401  (fixture)

from api.auth import OWN_ACCESS_BLUEPRINTS
from genq.webhooks.outbox import DeliveryStore

IGNORED_METHODS = {"HEAD", "OPTIONS"}
WEBHOOK = "http://127.0.0.1:9/hook"
# Routes that name no object, and how each is scoped (every other route names its object in its path)
UNSCOPED = {
    ("GET", "/healthz"): "public",
    ("GET", "/v1/openapi.json"): "public",
    ("GET", "/metrics"): "public aggregates",
    ("GET", "/v1/models"): "public data",
    ("GET", "/v1/jobs"): "lists the caller's jobs",
    ("POST", "/v1/jobs"): "creates a job of the caller's",
    ("POST", "/v1/batches"): "creates a batch of the caller's",
    ("GET", "/v1/webhooks/secret"): "the caller's secret",
    ("POST", "/v1/webhooks/secret/rotate"): "rotates the caller's secret",
    ("GET", "/openai/v1/models"): "public data",
    ("POST", "/openai/v1/chat/completions"): "creates a job of the caller's",
    ("POST", "/openai/v1/completions"): "creates a job of the caller's",
    ("GET", "/openai/v1/files"): "lists the caller's files",
    ("POST", "/openai/v1/files"): "creates a file of the caller's",
    ("GET", "/openai/v1/batches"): "lists the caller's OpenAI batches",
    ("POST", "/openai/v1/batches"): "creates a batch of the caller's",
}
# Routes with a path parameter that names public data, not an object of anyone's
PUBLIC_OBJECTS = {("GET", "/openai/v1/models/{model_id}")}
OPENAI = "/openai/v1/"


def _routes(keyed_api: KeyedApi) -> list[tuple[str, str]]:
    return sorted({
        (method, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule))
        for rule in keyed_api.app.url_map.iter_rules() for method in rule.methods or ()
        if method not in IGNORED_METHODS and rule.endpoint.split(".")[0] not in OWN_ACCESS_BLUEPRINTS
    })


def _objects_of_a(keyed_api: KeyedApi, key: str) -> dict[str, str]:
    job = submit(keyed_api.url, key, {"prompt": "Hi", "webhook": WEBHOOK}).json()
    batch = requests.post(keyed_api.url + "/v1/batches", data=b'{"custom_id": "a", "prompt": "x"}\n',
                          headers={**bearer(key), "Content-Type": "application/jsonl"}, timeout=30).json()
    keyed_api.services.store.fail(job["id"], "test_failure", "failed by the test")  # fires the webhook
    delivery = DeliveryStore(keyed_api.services.sessions).for_job(job["id"])[0].delivery
    return {"job_id": job["id"], "batch_id": batch["id"], "delivery_id": delivery.id}


def _openai_objects_of_a(keyed_api: KeyedApi, key: str) -> dict[str, str]:
    """A's objects of the OpenAI-compatible surface: an uploaded file, and an OpenAI batch made from it."""
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", ' \
           b'"body": {"messages": [{"role": "user", "content": "Hi"}]}}\n'
    file = requests.post(keyed_api.url + OPENAI + "files", headers=bearer(key), timeout=30,
                         files={"file": ("in.jsonl", line)}, data={"purpose": "batch"})
    assert file.status_code == 200, file.text
    batch = requests.post(keyed_api.url + OPENAI + "batches", headers=bearer(key), timeout=30,
                          json={"input_file_id": file.json()["id"], "endpoint": "/v1/chat/completions",
                                "completion_window": "24h"})
    assert batch.status_code == 200, batch.text
    return {"file_id": file.json()["id"], "batch_id": batch.json()["id"]}


def test_every_route_is_scoped_to_the_callers_key(keyed_api: KeyedApi) -> None:
    key_a, key_b = keyed_api.new_key("iso-a"), keyed_api.new_key("iso-b")
    genq_ids, openai_ids = _objects_of_a(keyed_api, key_a), _openai_objects_of_a(keyed_api, key_a)
    routes = _routes(keyed_api)
    unscoped = [r for r in routes if "{" not in r[1]]
    assert set(unscoped) == set(UNSCOPED), "classify the new route in UNSCOPED (or give it its object in the path)"

    # deletions last, so that every other route still finds A's objects
    for method, path in sorted(routes, key=lambda r: (r[0] == "DELETE", r)):
        if "{" not in path or (method, path) in PUBLIC_OBJECTS:
            continue
        ids = openai_ids if path.startswith(OPENAI) else genq_ids
        names = re.findall(r"{([^}]+)}", path)
        assert set(names) <= set(ids), f"{path}: a path parameter this test has no object for"
        url = keyed_api.url + path.format(**ids)
        missing = keyed_api.url + path.format(**{n: str(uuid.uuid4()) for n in names})
        as_b = requests.request(method, url, headers=bearer(key_b), timeout=30)
        as_missing = requests.request(method, missing, headers=bearer(key_a), timeout=30)
        assert as_b.status_code == 404, (method, path, as_b.text)
        # the same answer as for nothing at all: its existence is not revealed
        assert as_b.json()["error"]["code"] == as_missing.json()["error"]["code"], (method, path)
        as_a = requests.request(method, url, headers=bearer(key_a), timeout=30)
        assert as_a.status_code != 404 and as_a.status_code < 500, (method, path, as_a.text)

    listed_b = requests.get(keyed_api.url + "/v1/jobs", headers=bearer(key_b), timeout=30).json()
    listed_a = requests.get(keyed_api.url + "/v1/jobs", headers=bearer(key_a), timeout=30).json()
    assert listed_b["data"] == [] and {j["id"] for j in listed_a["data"]} >= {genq_ids["job_id"]}
    assert len(listed_a["data"]) == 3  # its job, its batch's job, its OpenAI batch's job: nothing of anyone else's
    for listing in ("files", "batches"):
        assert requests.get(keyed_api.url + OPENAI + listing, headers=bearer(key_b), timeout=30).json()["data"] == []


def test_each_key_has_its_own_webhook_secret_and_its_deliveries_sign_with_it(keyed_api: KeyedApi) -> None:
    key_a, key_b = keyed_api.new_key("secret-a"), keyed_api.new_key("secret-b")

    def secret(key: str) -> str:
        return requests.get(keyed_api.url + "/v1/webhooks/secret", headers=bearer(key), timeout=30).json()["secret"]

    a, b = secret(key_a), secret(key_b)
    assert a != b and secret(key_a) == a
    rotated = requests.post(keyed_api.url + "/v1/webhooks/secret/rotate", headers=bearer(key_a), timeout=30).json()
    assert rotated["secret"] not in (a, b) and secret(key_b) == b  # rotating A's leaves B's alone

    # a delivery of A's job is signed with A's secrets (the webhook worker asks whose it is)
    a_id = keyed_api.keys.find(key_a).id  # type: ignore[union-attr]
    job = submit(keyed_api.url, key_a, {"prompt": "Hi", "webhook": WEBHOOK}).json()
    keyed_api.services.store.fail(job["id"], "test_failure", "failed by the test")
    deliveries = DeliveryStore(keyed_api.services.sessions)
    owner = deliveries.owner(deliveries.for_job(job["id"])[0].delivery)
    assert owner == a_id
    assert [s.secret for s in keyed_api.services.secrets.signing(owner=owner)][:2] == [rotated["secret"], a]


def test_event_streams_are_capped_per_key_not_per_address(keyed_api: KeyedApi) -> None:
    key_a, key_b = keyed_api.new_key("streams-a"), keyed_api.new_key("streams-b")
    limits = keyed_api.services.stream_limits
    job_a = submit(keyed_api.url, key_a).json()["id"]
    job_b = submit(keyed_api.url, key_b).json()["id"]
    opened = []
    try:
        for _ in range(limits.max_per_client):
            r = requests.get(f"{keyed_api.url}/v1/jobs/{job_a}/events", headers=bearer(key_a), stream=True, timeout=30)
            assert r.status_code == 200
            opened.append(r)
        over = requests.get(f"{keyed_api.url}/v1/jobs/{job_a}/events", headers=bearer(key_a), timeout=30)
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_streams"
        # the same address, another key: its own cap
        other = requests.get(f"{keyed_api.url}/v1/jobs/{job_b}/events", headers=bearer(key_b), stream=True,
                             timeout=30)
        assert other.status_code == 200
        opened.append(other)
    finally:
        for r in opened:
            r.close()
    wait_until(lambda: limits.open_streams() == 0 or None, 30, "the streams to close")


def test_two_keys_sending_the_same_idempotency_key_get_their_own_jobs(keyed_api: KeyedApi) -> None:
    key_a, key_b = keyed_api.new_key("idem-a"), keyed_api.new_key("idem-b")
    same = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    body = {"prompt": "Hi"}
    a = requests.post(keyed_api.url + "/v1/jobs", json=body, headers={**bearer(key_a), **same}, timeout=30)
    b = requests.post(keyed_api.url + "/v1/jobs", json=body, headers={**bearer(key_b), **same}, timeout=30)
    again = requests.post(keyed_api.url + "/v1/jobs", json=body, headers={**bearer(key_a), **same}, timeout=30)
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b.headers  # B's first use of it: not A's job replayed
    assert again.json()["id"] == a.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
