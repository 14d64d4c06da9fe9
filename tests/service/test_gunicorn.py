"""`genq api` under gunicorn, as deployed: gthread workers sized by settings, keys required when configured, and
the app's request limits still the ones that answer (gunicorn's own lie above them, and what it refuses itself
comes back in the one error shape, not HTML)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from api.gunicorn_conf import (
    LIMIT_REQUEST_FIELD_SIZE,
    LIMIT_REQUEST_FIELDS,
    LIMIT_REQUEST_LINE,
    options,
    stream_cap,
)
from api.http_limits import MAX_HEADER_BYTES, MAX_HEADER_FIELD_BYTES, MAX_URL_BYTES
from genq.settings import Settings
from genq.store import migrate
from genq.store.api_keys import ApiKeyStore
from genq.store.db import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, an API key) of `genq api` (gunicorn, 2 workers x 4 threads, GENQ_AUTH=keys) on SQLite."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    url = f"sqlite:///{tmp / 'genq.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    key = ApiKeyStore(make_session_factory(engine)).create("served")[1]
    engine.dispose()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url, "GENQ_BROKER_URL": f"filesystem://{tmp / 'b'}",
           "GENQ_AUTH": "keys", "GENQ_API_WORKERS": "2", "GENQ_API_THREADS": "4"}
    proc = subprocess.Popen([sys.executable, "-m", "genq", "api", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = _listening(proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the workers load the tokenizer before they take requests
            try:
                if requests.get(base + "/healthz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        yield base, key
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _listening(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "listening on " in line:
            assert "gunicorn, 2 workers x 4 threads" in line
            return line.split("listening on ", 1)[1].split()[0]
    raise AssertionError("genq api did not start:\n" + "".join(seen))


def _error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


def test_gunicorns_limits_lie_above_the_apps() -> None:
    assert LIMIT_REQUEST_LINE > MAX_URL_BYTES + len("OPTIONS  HTTP/1.1")
    assert LIMIT_REQUEST_FIELD_SIZE > MAX_HEADER_FIELD_BYTES
    assert LIMIT_REQUEST_FIELDS * 128 >= MAX_HEADER_BYTES  # the app's total is reachable with short headers


def test_the_worker_model_is_gthread_sized_by_settings_with_streams_below_the_threads() -> None:
    settings = Settings.from_env({"GENQ_API_WORKERS": "3", "GENQ_API_THREADS": "40"})
    opts = options(settings, "::1", 8000)
    assert (opts["worker_class"], opts["workers"], opts["threads"], opts["bind"]) == ("gthread", 3, 40, ["[::1]:8000"])
    assert stream_cap(settings) == 32  # an open stream holds a thread: some are always left for other requests


def test_the_served_api_requires_a_key_and_serves_with_one(served: tuple[str, str]) -> None:
    base, key = served
    _error(requests.get(base + "/v1/jobs", timeout=10), 401, "unauthenticated")
    job = requests.post(base + "/v1/jobs", json={"prompt": "Hi"}, headers={"Authorization": f"Bearer {key}"},
                        timeout=30)
    assert job.status_code == 202, job.text
    # many requests over both workers: every one answered (each worker has its own pools)
    for _ in range(20):
        assert requests.get(f"{base}/v1/jobs/{job.json()['id']}", headers={"Authorization": f"Bearer {key}"},
                            timeout=10).status_code == 200


@pytest.mark.parametrize("length", [MAX_URL_BYTES + 1, 70_000])  # the app's limit; past gunicorn's own
def test_a_url_over_the_limit_is_414_in_the_error_shape(served: tuple[str, str], length: int) -> None:
    path = "/v1/jobs?model="
    _error(requests.get(f"{served[0]}{path}{'a' * (length - len(path))}", timeout=10), 414, "uri_too_long")


@pytest.mark.parametrize("size", [MAX_HEADER_FIELD_BYTES + 1, 70_000])
def test_a_header_over_the_limit_is_431_in_the_error_shape(served: tuple[str, str], size: int) -> None:
    value = "a" * (size - len("X-Big: "))
    _error(requests.get(served[0] + "/v1/jobs", headers={"X-Big": value}, timeout=10), 431, "headers_too_large")


def test_more_header_lines_than_gunicorn_takes_are_431_in_the_error_shape(served: tuple[str, str]) -> None:
    headers = {f"X-{i}": "a" for i in range(LIMIT_REQUEST_FIELDS + 10)}
    _error(requests.get(served[0] + "/v1/jobs", headers=headers, timeout=10), 431, "headers_too_large")


def test_a_body_over_the_limit_is_413(served: tuple[str, str]) -> None:
    base, key = served
    body = b'{"prompt": "' + b"a" * (1 << 20) + b'"}'
    r = requests.post(base + "/v1/jobs", data=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    _error(r, 413, "payload_too_large")
