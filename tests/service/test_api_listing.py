"""GET /v1/jobs over real HTTP: filters, newest-first cursor pages, and 422 for every bad parameter."""
from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from api_fixtures import Api, api  # noqa: F401  (fixture)
from sqlalchemy import event

from api.services import EXTENSION_KEY

PROMPT = {"prompt": "Hello", "params": {"max_new_tokens": 4}}


def _create(api: Api, **metadata: Any) -> dict[str, Any]:
    response = requests.post(f"{api.url}/v1/jobs", json={**PROMPT, "metadata": metadata}, timeout=10)
    assert response.status_code == 202
    return response.json()


def _list(api: Api, params: Any) -> dict[str, Any]:
    response = requests.get(f"{api.url}/v1/jobs", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(page: dict[str, Any]) -> list[str]:
    return [job["id"] for job in page["data"]]


def _all_pages(api: Api, params: dict[str, Any]) -> list[str]:
    ids, cursor = [], None
    while True:
        page = _list(api, {**params, **({"cursor": cursor} if cursor else {})})
        ids += _ids(page)
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            return ids


def test_jobs_are_listed_newest_first_as_job_objects(api: Api) -> None:
    run = uuid.uuid4().hex
    made = [_create(api, run=run)["id"] for _ in range(3)]
    page = _list(api, {"metadata[run]": run})
    assert page["object"] == "list" and _ids(page) == made[::-1]
    assert page["data"][0]["object"] == "job" and page["data"][0]["metadata"] == {"run": run}


def test_cursor_pages_cover_every_job_once_even_as_new_jobs_arrive(api: Api) -> None:
    run = uuid.uuid4().hex
    made = [_create(api, run=run)["id"] for _ in range(7)]
    first = _list(api, {"metadata[run]": run, "limit": 3})
    assert _ids(first) == made[::-1][:3] and first["has_more"] is True
    late = _create(api, run=run)["id"]  # newer than every page: not in the rest of this walk
    rest = _all_pages(api, {"metadata[run]": run, "limit": 3, "cursor": first["next_cursor"]})
    assert rest == made[::-1][3:] and late not in rest
    assert _all_pages(api, {"metadata[run]": run, "limit": 2}) == [late, *made[::-1]]


def test_status_filters_take_one_several_or_a_comma_list(api: Api) -> None:
    run = uuid.uuid4().hex
    queued, canceled, running = (_create(api, run=run)["id"] for _ in range(3))
    requests.post(f"{api.url}/v1/jobs/{canceled}/cancel", timeout=10)
    api.store.claim(running, "w")
    assert _ids(_list(api, {"metadata[run]": run, "status": "queued"})) == [queued]
    assert set(_ids(_list(api, {"metadata[run]": run, "status": "queued,canceled"}))) == {queued, canceled}
    assert set(_ids(_list(api, [("metadata[run]", run), ("status", "running"), ("status", "canceled")]))) == {
        running, canceled}


def test_model_and_created_range_filters(api: Api) -> None:
    run = uuid.uuid4().hex
    before = _create(api, run=run)
    time.sleep(0.05)
    middle = _create(api, run=run)
    time.sleep(0.05)
    after = _create(api, run=run)
    window = {"metadata[run]": run, "created_after": before["created_at"], "created_before": after["created_at"]}
    assert _ids(_list(api, window)) == [middle["id"]]
    naive_utc = datetime.fromisoformat(middle["created_at"]).astimezone(UTC).replace(tzinfo=None)
    since = {"metadata[run]": run, "created_after": (naive_utc - timedelta(microseconds=1)).isoformat()}
    assert _ids(_list(api, since)) == [after["id"], middle["id"]]  # a time without a zone is UTC
    assert len(_ids(_list(api, {"metadata[run]": run, "model": before["model"]}))) == 3
    assert _ids(_list(api, {"metadata[run]": run, "model": "some-other-model"})) == []


def test_metadata_filters_match_string_values_and_combine(api: Api) -> None:
    run = uuid.uuid4().hex
    a = _create(api, run=run, team="blue", n="5")["id"]
    b = _create(api, run=run, team="red", n=5)["id"]
    assert _ids(_list(api, {"metadata[run]": run, "metadata[team]": "blue"})) == [a]
    assert _ids(_list(api, {"metadata[run]": run, "metadata[n]": "5"})) == [a]  # the string, not the number 5
    assert _ids(_list(api, {"metadata[run]": run, "metadata[team]": "red", "metadata[n]": "5"})) == []
    assert set(_ids(_list(api, {"metadata[run]": run}))) == {a, b}


def test_limit_defaults_to_20(api: Api) -> None:
    run = uuid.uuid4().hex
    for _ in range(21):
        _create(api, run=run)
    page = _list(api, {"metadata[run]": run})
    assert len(page["data"]) == 20 and page["has_more"] is True


def test_a_page_of_100_queued_jobs_costs_the_statements_of_a_page_of_one(api: Api) -> None:
    api.cancel_all_queued()  # so the positions count only this test's jobs
    run = uuid.uuid4().hex
    lines = "".join(json.dumps({"custom_id": str(i), **PROMPT, "metadata": {"run": run}}) + "\n" for i in range(100))
    response = requests.post(f"{api.url}/v1/batches", data=lines, timeout=30,
                             headers={"content-type": "application/jsonl"})
    assert response.status_code == 202, response.text
    statements: list[str] = []
    engine = api.app.extensions[EXTENSION_KEY].db  # type: ignore[attr-defined]

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        one = _list(api, {"metadata[run]": run, "limit": 1})
        one_cost, statements[:] = len(statements), []
        page = _list(api, {"metadata[run]": run, "limit": 100})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(page["data"]) == 100 and one["data"][0] == page["data"][0]
    # newest first, so the positions run from the back of the queue to its head
    assert [job["queue_position"] for job in page["data"]] == list(range(99, -1, -1))
    assert len(statements) == one_cost <= 3, statements


@pytest.mark.parametrize("params,field", [
    ({"status": "done"}, "status"),
    ({"status": ","}, "status"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"created_before": "2025-13-40"}, "created_before"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WyJ4IiwgMV0"}, "cursor"),  # base64 JSON, but not a cursor
    ({"colour": "red"}, "colour"),
    ({'metadata[a"b]': "x"}, 'metadata[a"b]'),
    ({"metadata[]": "x"}, "metadata[]"),
    ([("model", "a"), ("model", "b")], "model"),
])
def test_bad_list_parameters_are_422_naming_the_parameter(api: Api, params: Any, field: str) -> None:
    response = requests.get(f"{api.url}/v1/jobs", params=params, timeout=10)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["code"] in ("invalid_value", "unknown_field") and error["message"]
