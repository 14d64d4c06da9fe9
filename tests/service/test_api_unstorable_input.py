"""Input the database cannot store, and ids that cannot exist, are client errors (4xx naming the field), never
a 500. Found by the schemathesis run (tests/service/test_openapi_schemathesis.py) and by probing the same kinds
of input by hand where random generation rarely reaches (query strings, cursors); each runs on PostgreSQL,
which refuses NUL in text and JSONB, and on SQLite."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import create_app
from genq.settings import Settings

JSON = {"content-type": "application/json"}
JSONL = "application/jsonl"


@pytest.fixture
def client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


@pytest.mark.parametrize(
    "raw, field",
    [
        ('{"prompt": "a\\u0000b"}', "prompt"),
        ('{"messages": [{"role": "user", "content": "\\u0000"}]}', "messages[0].content"),
        ('{"prompt": "a", "metadata": {"k\\u0000": 1}}', "metadata.k\x00"),
        ('{"prompt": "a", "metadata": {"k": ["x", "\\u0000"]}}', "metadata.k[1]"),
        ('{"prompt": "a", "params": {"stop": ["\\u0000"]}}', "params.stop[0]"),
    ],
)
def test_a_nul_character_anywhere_in_a_job_is_a_422_naming_the_field(
    client: FlaskClient, raw: str, field: str
) -> None:
    error = _error(client.post("/v1/jobs", data=raw, headers=JSON), 422)
    assert error["code"] == "invalid_value" and error["field"] == field


def test_a_lone_surrogate_is_a_422_naming_the_field(client: FlaskClient) -> None:
    error = _error(client.post("/v1/jobs", data='{"prompt": "a\\ud800b"}', headers=JSON), 422)
    assert error["code"] == "invalid_value" and error["field"] == "prompt"


def test_a_number_beyond_a_double_is_invalid_json(client: FlaskClient) -> None:
    error = _error(client.post("/v1/jobs", data='{"prompt": "a", "metadata": {"x": 1e400}}', headers=JSON), 400)
    assert error["code"] == "invalid_json"


def test_a_nul_in_a_batch_custom_id_names_its_line(client: FlaskClient) -> None:
    body = b'{"custom_id": "a", "prompt": "x"}\n{"custom_id": "b\\u0000", "prompt": "x"}\n'
    error = _error(client.post("/v1/batches", data=body, content_type=JSONL), 422)
    assert error["field"] == "line[2].custom_id"


def test_a_nul_in_batch_metadata_is_a_422(client: FlaskClient) -> None:
    body = b'{"custom_id": "a", "prompt": "x"}\n'
    response = client.post("/v1/batches", query_string={"metadata": '{"a": "\\u0000"}'}, data=body, content_type=JSONL)
    assert _error(response, 422)["field"] == "metadata.a"


def test_a_batch_line_with_a_number_beyond_a_double_is_a_422(client: FlaskClient) -> None:
    body = b'{"custom_id": "a", "prompt": "x", "metadata": {"x": -1e999}}\n'
    error = _error(client.post("/v1/batches", data=body, content_type=JSONL), 422)
    assert error["code"] == "invalid_json" and error["field"] == "line[1]"


@pytest.mark.parametrize("path", ["/v1/batches/%00", "/v1/batches/%00/results", "/v1/batches/" + "a" * 40])
def test_a_batch_id_that_cannot_exist_is_a_404(client: FlaskClient, path: str) -> None:
    assert _error(client.get(path), 404)["code"] == "batch_not_found"


def test_redelivering_a_delivery_id_that_cannot_exist_is_a_404(client: FlaskClient) -> None:
    job_id = client.post("/v1/jobs", json={"prompt": "x"}).get_json()["id"]
    error = _error(client.post(f"/v1/jobs/{job_id}/deliveries/%00/redeliver"), 404)
    assert error["code"] == "delivery_not_found"


def _cursor(created_at: str, job_id: str) -> str:
    raw = json.dumps([created_at, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "query, field",
    [
        ("model=%00", "model"),
        ("metadata[k]=%00", "metadata[k]"),
        ("created_after=0001-01-01T00:00:00%2B01:00", "created_after"),  # before year 1 in UTC
        ("created_before=9999-12-31T23:59:59-01:00", "created_before"),  # after year 9999 in UTC
        ("limit=" + "1" * 5000, "limit"),  # more digits than int() converts
        ("cursor=" + _cursor("2020-01-01T00:00:00+00:00", "\x00"), "cursor"),
        ("cursor=" + _cursor("2020-01-01T00:00:00+00:00", "\ud800"), "cursor"),
        ("cursor=" + _cursor("0001-01-01T00:00:00+05:00", "00000000-0000-4000-8000-000000000000"), "cursor"),
    ],
)
def test_a_listing_query_the_database_cannot_take_is_a_422_naming_the_parameter(
    client: FlaskClient, query: str, field: str
) -> None:
    error = _error(client.get(f"/v1/jobs?{query}"), 422)
    assert error["code"] == "invalid_value" and error["field"] == field


def test_canceling_a_job_id_that_cannot_exist_is_a_404(client: FlaskClient) -> None:
    assert _error(client.post("/v1/jobs/%00/cancel"), 404)["code"] == "job_not_found"
