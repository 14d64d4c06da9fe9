"""POST /v1/batches (JSONL or a multipart upload), GET /v1/batches/{id} and its results."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api import create_app
from api.services import EXTENSION_KEY
from genq.settings import Settings
from genq.store.schema import Job

JSONL = "application/jsonl"


@pytest.fixture
def client(database_url: str, filesystem_broker_url: str) -> FlaskClient:
    settings = Settings.from_env({
        "DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url, "GENQ_WEBHOOK_ALLOW": "127.0.0.1",
        "GENQ_BATCH_MAX_LINES": "5", "GENQ_BATCH_MAX_BYTES": "4096",
    })
    return create_app(settings).test_client()


def _jsonl(*lines: Any) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def _line(custom_id: str, **fields: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "prompt": f"prompt {custom_id}", "params": {"max_new_tokens": 4}, **fields}


def _job_count(client: FlaskClient) -> int:
    with client.application.extensions["genq"].sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def _results(client: FlaskClient, batch_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/batches/{batch_id}/results")
    assert response.status_code == 200 and response.mimetype == "application/jsonl"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


@pytest.mark.parametrize("content_type", ["application/jsonl", "application/x-ndjson"])
def test_a_batch_creates_one_queued_job_per_line(client: FlaskClient, content_type: str) -> None:
    body = _jsonl(_line("a"), _line("b", messages=[{"role": "user", "content": "hi"}], prompt=None), _line("c"))
    response = client.post("/v1/batches?metadata=%7B%22run%22%3A%207%7D", data=body, content_type=content_type)
    assert response.status_code == 202, response.get_json()
    batch = response.get_json()
    assert response.headers["Location"] == f"/v1/batches/{batch['id']}"
    assert batch["object"] == "batch" and batch["status"] == "in_progress" and batch["metadata"] == {"run": 7}
    assert batch["counts"] == {"total": 3, "queued": 3, "running": 0, "succeeded": 0, "failed": 0, "canceled": 0,
                               "expired": 0}
    assert client.get(f"/v1/batches/{batch['id']}").get_json() == batch
    results = _results(client, batch["id"])
    assert [r["custom_id"] for r in results] == ["a", "b", "c"]
    assert all(r["job"]["batch_id"] == batch["id"] and r["job"]["status"] == "queued" for r in results)
    assert results[1]["job"]["input"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert results[0]["job"]["custom_id"] == "a"


def test_a_multipart_upload_works_like_a_jsonl_body(client: FlaskClient) -> None:
    data = {"file": (io.BytesIO(_jsonl(_line("x"), _line("y"))), "requests.jsonl"), "metadata": '{"k": "v"}'}
    response = client.post("/v1/batches", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["counts"]["total"] == 2 and response.get_json()["metadata"] == {"k": "v"}


def test_counts_and_status_follow_the_jobs_until_the_batch_completes(client: FlaskClient) -> None:
    batch = client.post("/v1/batches", data=_jsonl(_line("a"), _line("b"), _line("c")), content_type=JSONL).get_json()
    store = client.application.extensions["genq"].store
    a, b, c = (r["job"]["id"] for r in _results(client, batch["id"]))
    store.claim(a, "w")
    store.succeed(a, text="A", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    store.claim(b, "w")
    view = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert (view["status"], view["counts"]["succeeded"], view["counts"]["running"], view["counts"]["queued"]) == (
        "in_progress", 1, 1, 1)
    assert view["completed_at"] is None
    store.fail(b, "boom", "broke")
    store.cancel(c)
    view = client.get(f"/v1/batches/{batch['id']}").get_json()
    assert view["status"] == "completed" and view["completed_at"] is not None
    assert {k: view["counts"][k] for k in ("total", "succeeded", "failed", "canceled")} == {
        "total": 3, "succeeded": 1, "failed": 1, "canceled": 1}
    results = {r["custom_id"]: r["job"] for r in _results(client, batch["id"])}
    assert results["a"]["output"]["text"] == "A" and results["b"]["error"]["code"] == "boom"


BAD_BATCHES: list[tuple[str, bytes, int, str, str | None]] = [
    # (case, body, status, code, field)
    ("bad JSON on line 2", _jsonl(_line("a"), "{nope"), 422, "invalid_json", "line[2]"),
    ("a line that is not an object", _jsonl(_line("a"), "[1]"), 422, "invalid_body", "line[2]"),
    ("no custom_id", _jsonl({"prompt": "x"}), 422, "invalid_value", "line[1].custom_id"),
    ("custom_id not a string", _jsonl(_line("a") | {"custom_id": 5}), 422, "invalid_value", "line[1].custom_id"),
    ("duplicate custom_id", _jsonl(_line("a"), _line("b"), _line("a")), 422, "duplicate_custom_id",
     "line[3].custom_id"),
    ("bad param on line 3", _jsonl(_line("a"), _line("b"), _line("c", params={"top_p": 3})), 422, "invalid_param",
     "line[3].params.top_p"),
    ("bad message role", _jsonl(_line("a", prompt=None, messages=[{"role": "x", "content": "y"}])), 422,
     "invalid_value", "line[1].messages[0].role"),
    ("unknown field", _jsonl(_line("a", max_tokens=3)), 422, "unknown_field", "line[1].max_tokens"),
    ("over the context on line 2", _jsonl(_line("a"), _line("b", params={"max_new_tokens": 8191})), 422,
     "context_length_exceeded", "line[2].params.max_new_tokens"),
    ("top_k past the vocabulary", _jsonl(_line("a", params={"do_sample": True, "top_k": 49153})), 422,
     "invalid_param", "line[1].params.top_k"),
    ("forbidden webhook", _jsonl(_line("a", webhook="http://10.0.0.1/h")), 422, "webhook_url_forbidden",
     "line[1].webhook"),
    ("NaN", _jsonl('{"custom_id": "a", "prompt": "x", "params": {"temperature": NaN}}'), 422, "invalid_json",
     "line[1]"),
    ("bad UTF-8", b'{"custom_id": "a", "prompt": "\xff"}\n', 422, "invalid_json", "line[1]"),
    ("empty", b"\n\n", 422, "empty_batch", None),
    ("too many lines", _jsonl(*[_line(str(i)) for i in range(6)]), 413, "too_many_lines", None),
    ("too many bytes", _jsonl(_line("a", prompt="x" * 5000)), 413, "payload_too_large", None),
]


@pytest.mark.parametrize("case,body,status,code,field", BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_a_bad_batch_is_refused_naming_the_line_and_creates_nothing(
    client: FlaskClient, case: str, body: bytes, status: int, code: str, field: str | None
) -> None:
    before = _job_count(client)
    response = client.post("/v1/batches", data=body, content_type=JSONL)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and error.get("field") == field
    if field and field.startswith("line["):
        assert error["message"].startswith(f"line {field[5:field.index(']')]}: ")
    assert _job_count(client) == before


def test_blank_lines_are_skipped_but_counted_in_line_numbers(client: FlaskClient) -> None:
    body = _jsonl(_line("a")) + b"\n" + _jsonl(_line("b", params={"top_k": -1}))
    response = client.post("/v1/batches", data=body, content_type=JSONL)
    assert response.get_json()["error"]["field"] == "line[3].params.top_k"


@pytest.mark.parametrize("content_type,data,code", [
    ("application/json", b'{"custom_id": "a", "prompt": "x"}', "unsupported_media_type"),
    ("text/plain", b"x", "unsupported_media_type"),
])
def test_other_content_types_get_415(client: FlaskClient, content_type: str, data: bytes, code: str) -> None:
    response = client.post("/v1/batches", data=data, content_type=content_type)
    assert response.status_code == 415 and response.get_json()["error"]["code"] == code


def test_a_multipart_form_without_a_file_is_422(client: FlaskClient) -> None:
    response = client.post("/v1/batches", data={"metadata": "{}"}, content_type="multipart/form-data")
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "file"


@pytest.mark.parametrize("metadata", ["not json", "[1]", '"x"'])
def test_bad_batch_metadata_is_422(client: FlaskClient, metadata: str) -> None:
    response = client.post("/v1/batches", query_string={"metadata": metadata}, data=_jsonl(_line("a")),
                           content_type=JSONL)
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "metadata"


@pytest.mark.parametrize("path", ["/v1/batches/nope", "/v1/batches/6d0f4cbe-7a37-4a4c-9d55-0d8f1d9d4f1a/results",
                                  "/v1/batches/" + "x" * 300])
def test_unknown_batches_are_404(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "batch_not_found"


def test_a_batch_the_broker_refuses_is_accepted_with_its_jobs_queued_unpublished(database_url: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": "redis://127.0.0.1:9/0"})
    app = create_app(settings)
    response = app.test_client().post("/v1/batches", data=_jsonl(_line("a"), _line("b")), content_type=JSONL)
    assert response.status_code == 202, response.get_json()
    batch = response.get_json()
    svc = app.extensions[EXTENSION_KEY]
    svc.relay.stop()
    assert batch["counts"]["queued"] == 2 and batch["status"] != "completed"
    with svc.sessions() as session:
        published = list(session.scalars(select(Job.published_at).where(Job.batch_id == batch["id"])))
    assert published == [None, None]  # both left for the relay, which publishes them once the broker answers


def test_a_batch_line_s_scheduling_fields_are_kept_on_its_job(client: FlaskClient) -> None:
    body = _jsonl(_line("a", priority=7, ttl_seconds=60, deadline_seconds=30, max_attempts=1))
    batch = client.post("/v1/batches", data=body, content_type=JSONL).get_json()
    line = json.loads(client.get(f"/v1/batches/{batch['id']}/results").get_data(as_text=True))
    job = line["job"]
    assert (job["priority"], job["ttl_seconds"], job["deadline_seconds"], job["max_attempts"]) == (7, 60, 30, 1)
