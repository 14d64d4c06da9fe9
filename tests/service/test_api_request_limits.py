"""Deeply nested JSON, over-long URLs and oversized headers are 4xx in the one error shape, over real HTTP, never a
500 `RecursionError` or the HTTP server's HTML page. JSON nesting is bounded before anything parses it."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests
from api_fixtures import Api, api  # noqa: F401  (fixture)

from api.http_limits import MAX_HEADER_BYTES, MAX_HEADER_FIELD_BYTES, MAX_URL_BYTES
from api.json_depth import MAX_DEPTH

JSON = {"content-type": "application/json"}
JSONL = {"content-type": "application/jsonl"}
DEEP = "[" * 1000 + "]" * 1000  # deep enough to exhaust Python's stack in json.loads


def _error(response: requests.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error.get("field") == field
    return error


def _nested(levels: int) -> str:
    """A JSON value of exactly `levels` nested arrays."""
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("body, field", [
    ('{"prompt": "hi", "metadata": {"a": %s}}' % DEEP, "metadata"),
    ('{"messages": [{"role": "user", "content": %s}]}' % DEEP, "messages"),
    ('{"prompt": "hi", "params": {"stop": %s}}' % DEEP, "params"),
    (DEEP, None),
])
def test_a_job_body_nested_1000_deep_is_422_too_deep_naming_the_field(api: Api, body: str, field: str | None) -> None:
    _error(requests.post(f"{api.url}/v1/jobs", data=body, headers=JSON, timeout=10), 422, "too_deep", field)


def test_nesting_up_to_the_limit_is_stored_and_shown(api: Api) -> None:
    # the body object is level 1, metadata level 2, its member the rest
    inner = _nested(MAX_DEPTH - 2)
    brackets_in_a_string = "[{" * 500  # inside a string, brackets are text
    body = '{"prompt": "hi", "metadata": {"deep": %s, "note": "%s \\" ["}}' % (inner, brackets_in_a_string)
    response = requests.post(f"{api.url}/v1/jobs", data=body, headers=JSON, timeout=10)
    assert response.status_code == 202, response.text
    shown = requests.get(f"{api.url}/v1/jobs/{response.json()['id']}", timeout=10).json()["metadata"]
    assert shown == {"deep": json.loads(inner), "note": f'{brackets_in_a_string} " ['}
    one_more = '{"prompt": "hi", "metadata": {"deep": %s}}' % _nested(MAX_DEPTH - 1)
    _error(requests.post(f"{api.url}/v1/jobs", data=one_more, headers=JSON, timeout=10), 422, "too_deep", "metadata")


def test_a_batch_line_nested_too_deep_is_422_naming_the_line(api: Api) -> None:
    raw = '{"custom_id": "a", "prompt": "x"}\n{"custom_id": "b", "prompt": "x", "metadata": {"k": %s}}\n' % DEEP
    error = _error(requests.post(f"{api.url}/v1/batches", data=raw, headers=JSONL, timeout=10), 422, "too_deep",
                   "line[2].metadata")
    assert error["message"].startswith("line 2:")


def test_batch_metadata_nested_too_deep_is_422(api: Api) -> None:
    response = requests.post(f"{api.url}/v1/batches", params={"metadata": '{"k": %s}' % _nested(200)},
                             data='{"custom_id": "a", "prompt": "x"}\n', headers=JSONL, timeout=10)
    _error(response, 422, "too_deep", "metadata")


def test_a_cursor_of_nested_arrays_is_422(api: Api) -> None:
    cursor = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    _error(requests.get(f"{api.url}/v1/jobs", params={"cursor": cursor}, timeout=10), 422, "invalid_value", "cursor")


@pytest.mark.parametrize("length", [MAX_URL_BYTES + 1, 70_000])  # the app's limit; past the HTTP server's own
def test_a_url_over_the_limit_is_414_in_the_error_shape(api: Api, length: int) -> None:
    path = "/v1/jobs?model="
    response = requests.get(f"{api.url}{path}{'a' * (length - len(path))}", timeout=10)
    _error(response, 414, "uri_too_long")


def test_a_url_at_the_limit_is_served(api: Api) -> None:
    path = "/v1/jobs?cursor="
    response = requests.get(f"{api.url}{path}{'a' * (MAX_URL_BYTES - len(path))}", timeout=10)
    _error(response, 422, "invalid_value", "cursor")  # read and judged by the view, not refused by size


@pytest.mark.parametrize("size, field", [(MAX_HEADER_FIELD_BYTES + 1, "X-Big"), (70_000, None)])
def test_a_header_over_the_limit_is_431_in_the_error_shape(api: Api, size: int, field: str | None) -> None:
    value = "a" * (size - len("X-Big: "))
    _error(requests.get(f"{api.url}/v1/jobs", headers={"X-Big": value}, timeout=10), 431, "headers_too_large", field)


def test_headers_over_the_limit_together_are_431(api: Api) -> None:
    each = MAX_HEADER_FIELD_BYTES // 2
    headers = {f"X-{i}": "a" * each for i in range(MAX_HEADER_BYTES // each + 1)}
    _error(requests.get(f"{api.url}/v1/jobs", headers=headers, timeout=10), 431, "headers_too_large")


def test_more_header_lines_than_the_server_takes_are_431_in_the_error_shape(api: Api) -> None:
    headers = {f"X-{i}": "a" for i in range(120)}
    _error(requests.get(f"{api.url}/v1/jobs", headers=headers, timeout=10), 431, "headers_too_large")
