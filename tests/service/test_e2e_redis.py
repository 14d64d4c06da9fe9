"""End to end on the production shape: real HTTP, PostgreSQL, Redis and a `genq worker` process running
the real default model (SmolLM2-135M-Instruct)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests
from e2e_helpers import REDIS_URL, ApiThread, Child, wait_for_job

from api import create_app
from genq.broker import Publisher, make_celery
from genq.settings import Settings
from genq.store import migrate
from genq.store.db import make_engine, make_session_factory
from genq.store.jobs import JobStore

pytestmark = pytest.mark.slow

FRANCE = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
LOAD_TIMEOUT_S = 300
JOB_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def env(postgres_database: Callable[[], str], redis_key_prefix: str) -> dict[str, str]:
    # a database of its own: the worker's sweeper acts on every job in its database, and other tests leave
    # queued jobs in the shared one
    url = postgres_database()
    migrate.upgrade(url)
    return {
        "DATABASE_URL": url,
        "GENQ_BROKER_URL": REDIS_URL,
        "GENQ_BROKER_KEY_PREFIX": redis_key_prefix,
        "GENQ_BATCH_SIZE": "4",
    }


@pytest.fixture(scope="module")
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture(scope="module")
def worker(env: dict[str, str]) -> Iterator[Child]:
    child = Child(["worker"], env)
    try:
        child.wait_for_line("ready in", LOAD_TIMEOUT_S)  # the preloaded model is ready
        yield child
    finally:
        child.stop()


@pytest.fixture(scope="module")
def api_url(settings: Settings, worker: Child) -> Iterator[str]:
    server = ApiThread(create_app(settings))
    yield server.url
    server.stop()


def test_a_greedy_chat_job_about_france_answers_paris(api_url: str) -> None:
    response = requests.post(f"{api_url}/v1/jobs", json={**FRANCE, "params": {"max_new_tokens": 24}}, timeout=10)
    assert response.status_code == 202
    job = wait_for_job(api_url, response.json()["id"], JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", job
    assert "Paris" in job["output"]["text"]
    assert job["output"]["finish_reason"] in ("eos", "length", "stop")
    usage = job["output"]["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 24
    assert job["params"]["do_sample"] is False and job["attempts"] == 1
    assert job["started_at"] <= job["completed_at"]


def test_a_message_delivered_twice_runs_the_job_once(settings: Settings, api_url: str, worker: Child) -> None:
    store = JobStore(make_session_factory(make_engine(settings.database_url)))
    job = store.create(model=settings.default_model, input={"prompt": "The capital of France is"},
                       params={"max_new_tokens": 8})
    publisher = Publisher(make_celery(settings))
    publisher.publish(job.id, job.model)
    publisher.publish(job.id, job.model)
    finished = wait_for_job(api_url, job.id, JOB_TIMEOUT_S)
    worker.wait_for_line(f"job {job.id} is not queued; skipping", JOB_TIMEOUT_S)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1
    assert store.get(job.id).attempts == 1


def test_concurrent_jobs_all_finish_in_one_worker(api_url: str) -> None:
    ids = [
        requests.post(f"{api_url}/v1/jobs", json={"prompt": f"Count to {n}:", "params": {"max_new_tokens": 12}},
                      timeout=10).json()["id"]
        for n in range(3, 9)
    ]
    jobs = [wait_for_job(api_url, i, JOB_TIMEOUT_S) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids)
    assert all(j["output"]["usage"]["completion_tokens"] > 0 for j in jobs)
