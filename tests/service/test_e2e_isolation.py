"""End to end, on a real `genq worker` process (the tiny random model), PostgreSQL and the file-system broker:
one request can never fail another, and the context the API advertises is the one the worker enforces.

Poisoned jobs are put in through the store and the broker, as the API would never let them in (a row edited
by hand, a client of an older API): each fails alone, with its own code, while the real jobs it joined run on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_helpers import ApiThread, Child, wait_for_job, wait_until
from tiny_model import TINY_MODEL, tiny_gguf  # noqa: F401  (fixture)

from api import create_app
from api.services import EXTENSION_KEY, Services
from genq.settings import Settings
from genq.store import migrate
from genq.submit import NewJob, submit_job

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 240
GOOD_TOKENS = 100  # long enough that the good jobs are still decoding when the poisoned ones come


class Service:
    def __init__(self, database_url: str, model: Path, tmp: Path):
        self.env = {
            "DATABASE_URL": database_url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'broker'}",
            "GENQ_MODELS": f"{TINY_MODEL}={model}", "GENQ_BATCH_SIZE": "8", "GENQ_JOB_TIMEOUT": "240",
            "GENQ_BROKER_VISIBILITY_TIMEOUT": "300",
        }
        migrate.upgrade(database_url)
        self.settings = Settings.from_env(self.env)
        self.app = create_app(self.settings)
        self.svc: Services = self.app.extensions[EXTENSION_KEY]
        self.api = ApiThread(self.app)
        self.url = self.api.url
        self.worker = Child(["worker", "--models", TINY_MODEL, "--queues", "models"], self.env, cwd=tmp)
        self.worker.wait_for_line("ready in", START_TIMEOUT_S)

    def post(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/v1/jobs", json={"model": TINY_MODEL, **body}, timeout=60)

    def job(self, job_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json()

    def insert_unchecked(self, params: dict[str, Any], prompt: str = "Hello") -> str:
        """A job recorded and queued without the API's validation: its params are stored as given."""
        resolved = {**self.svc.catalog.resolve_params(self.svc.catalog.get(TINY_MODEL), None).to_dict(), **params}
        job, _ = submit_job(self.svc.store, self.svc.publisher,
                            NewJob(model=TINY_MODEL, input={"prompt": prompt}, params=resolved, metadata=None))
        return job.id

    def stop(self) -> None:
        self.worker.stop()
        self.api.stop()
        self.svc.db.dispose()


@pytest.fixture(scope="module")
def service(postgres_database: Callable[[], str], tiny_gguf: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(postgres_database(), tiny_gguf, tmp_path_factory.mktemp("isolation"))
    yield svc
    svc.stop()


def _good_jobs(service: Service, n: int) -> list[str]:
    ids = []
    for i in range(n):
        response = service.post({"prompt": f"Tell story number {i}.",
                                 "params": {"max_new_tokens": GOOD_TOKENS, "ignore_eos": True}})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    wait_until(lambda: all(service.job(j)["status"] == "running" for j in ids), JOB_TIMEOUT_S,
               "the good jobs did not all start", interval=0.05)
    return ids


POISONS = {
    # the reported request: past int64, the sampler's tensor overflowed and the whole batch failed
    "top_k past int64": {"do_sample": True, "top_k": 9223372036854775808, "seed": 1, "max_new_tokens": 1},
    # within GenerationParams' bounds but past the model's: refused by the engine at submit
    "top_k past the vocabulary": {"do_sample": True, "top_k": 10**6, "seed": 1, "max_new_tokens": 4},
    "stop id past the vocabulary": {"stop_token_ids": [10**6], "max_new_tokens": 4},
    "a 4,000-digit max_new_tokens": {"max_new_tokens": 10**4000},
}


def test_poisoned_jobs_joining_a_running_batch_fail_alone_and_the_batch_succeeds(service: Service) -> None:
    good = _good_jobs(service, 3)
    poisoned = {name: service.insert_unchecked(params) for name, params in POISONS.items()}
    for name, job_id in poisoned.items():
        job = wait_for_job(service.url, job_id, JOB_TIMEOUT_S)
        assert job["status"] == "failed", (name, job)
        assert job["error"]["code"] == "invalid_request", (name, job["error"])
        assert len(job["error"]["message"]) < 300 and "9" * 21 not in job["error"]["message"], name
    for job_id in good:
        job = wait_for_job(service.url, job_id, JOB_TIMEOUT_S)
        assert job["status"] == "succeeded", (job["error"], service.worker.output(80))
        assert job["output"]["usage"]["completion_tokens"] == GOOD_TOKENS
    assert not any("0" * 21 in line or "9" * 21 in line for line in service.worker.lines)  # nothing huge logged
    after = service.post({"prompt": "And another.", "params": {"max_new_tokens": 8, "ignore_eos": True}}).json()
    assert wait_for_job(service.url, after["id"], JOB_TIMEOUT_S)["status"] == "succeeded"  # the engine goes on


def test_the_advertised_context_length_is_exactly_what_the_worker_runs(service: Service, tiny_gguf: Path) -> None:
    from models.prompting import load_tokenizer, prompt_ids

    models = {m["name"]: m for m in requests.get(f"{service.url}/v1/models", timeout=10).json()["data"]}
    context = models[TINY_MODEL]["context_length"]
    assert context == 4096  # GENQ_MAX_LEN unset: the tiny model's own context length
    prompt = "Once upon a time there was a model. " * 450  # about 4,050 tokens: a short decode fills the rest
    room = context - len(prompt_ids(*load_tokenizer(tiny_gguf), prompt=prompt))
    over = service.post({"prompt": prompt, "params": {"max_new_tokens": room + 1}})
    assert over.status_code == 422 and over.json()["error"]["field"] == "params.max_new_tokens"
    fits = service.post({"prompt": prompt, "params": {"max_new_tokens": room, "ignore_eos": True}})
    assert fits.status_code == 202, fits.text
    job = wait_for_job(service.url, fits.json()["id"], JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", job["error"]
    assert job["output"]["usage"]["prompt_tokens"] + job["output"]["usage"]["completion_tokens"] == context
    # the worker counts the same: past the API (a stored row), one token more is its prompt_too_long
    over_id = service.insert_unchecked({"max_new_tokens": room + 1, "ignore_eos": True}, prompt=prompt)
    assert wait_for_job(service.url, over_id, JOB_TIMEOUT_S)["error"]["code"] == "prompt_too_long"
