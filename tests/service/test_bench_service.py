"""`genq bench --through-service` sends the benchmark workload as one batch the API accepts, job for job."""
from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from api import create_app
from genq.cli.bench_service import batch_lines
from genq.settings import Settings

WORKLOAD = [  # the shared bench kit's line format
    {"id": "r0", "messages": [{"role": "user", "content": "Write a short story about a cat."}],
     "max_new_tokens": 57, "ignore_eos": True, "params": {"do_sample": False}},
    {"id": "r1", "messages": [{"role": "user", "content": "Write a short story about trains."}],
     "max_new_tokens": 8, "ignore_eos": True, "params": {"do_sample": True, "temperature": 0.8, "seed": 7001}},
]


@pytest.fixture
def client(database_url: str, filesystem_broker_url: str) -> FlaskClient:
    settings = Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url})
    return create_app(settings).test_client()


def test_the_workload_becomes_one_batch_with_each_lines_work_fixed(client: FlaskClient) -> None:
    response = client.post("/v1/batches", data=batch_lines(WORKLOAD, None).encode(),
                           content_type="application/jsonl")
    assert response.status_code == 202, response.get_json()
    results = client.get(f"/v1/batches/{response.get_json()['id']}/results").get_data(as_text=True)
    jobs = {r["custom_id"]: r["job"] for r in map(json.loads, results.splitlines())}
    assert jobs["r0"]["params"]["max_new_tokens"] == 57 and jobs["r0"]["params"]["ignore_eos"] is True
    assert jobs["r0"]["params"]["do_sample"] is False
    assert jobs["r1"]["params"]["seed"] == 7001 and jobs["r1"]["params"]["temperature"] == 0.8
    assert jobs["r1"]["input"]["messages"] == WORKLOAD[1]["messages"]
