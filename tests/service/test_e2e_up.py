"""End to end on the embedded defaults: `genq up` in an empty directory (SQLite and the file-system broker
under ./var), one job through real HTTP, its event stream, and its webhook (the one worker consumes the
webhook queue too). Prints the time from `genq up` to the first finished job."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from e2e_helpers import Child, free_port, read_sse, wait_for_job, wait_until
from standardwebhooks.webhooks import Webhook
from webhooks.receiver import Receiver

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 300


def test_genq_up_serves_a_job_on_embedded_defaults(tmp_path: Path) -> None:
    port = free_port()
    started = time.perf_counter()
    # no DATABASE_URL / GENQ_BROKER_URL: the defaults under ./var of the working directory
    env = {"DATABASE_URL": "", "GENQ_BROKER_URL": "", "GENQ_BROKER_KEY_PREFIX": "", "GENQ_WEBHOOK_ALLOW": "127.0.0.1"}
    up = Child(["up", "--port", str(port)], env, cwd=tmp_path)
    receiver = Receiver()
    try:
        up.wait_for_line("genq is up: http://127.0.0.1:", STARTUP_TIMEOUT_S)
        url = f"http://127.0.0.1:{port}"
        ready_s = time.perf_counter() - started
        # up means the model is in memory: the worker logged it loaded before the supervisor said so
        up_at = next(i for i, line in enumerate(up.lines) if "genq is up" in line)
        assert any("model smollm2-135m-instruct ready in" in line for line in up.lines[:up_at]), up.output()
        response = requests.post(f"{url}/v1/jobs", timeout=10, json={
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "params": {"max_new_tokens": 24},
            "webhook": receiver.url(),
        })
        assert response.status_code == 202, response.text
        with requests.get(f"{url}/v1/jobs/{response.json()['id']}/events", stream=True,
                          timeout=STARTUP_TIMEOUT_S) as stream:
            frames = [f for f in read_sse(stream) if "event" in f]
        job = wait_for_job(url, response.json()["id"], STARTUP_TIMEOUT_S)
        first_job_s = time.perf_counter() - started
        assert frames[-1]["event"] == "done" and frames[-1]["data"] == job
        assert "".join(f["data"]["text"] for f in frames if f["event"] == "delta") == job["output"]["text"]
        wait_until(lambda: receiver.received, 30, "the webhook did not arrive")
        secret = requests.get(f"{url}/v1/webhooks/secret", timeout=10).json()["secret"]
        assert Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers) == job
        assert job["status"] == "succeeded", (job, up.output())
        assert "Paris" in job["output"]["text"]
        print(f"\ngenq up: up (model loaded) after {ready_s:.1f}s, first job finished after {first_job_s:.1f}s")
        assert (tmp_path / "var" / "genq.db").is_file()
    finally:
        receiver.close()
        code = up.stop(signal.SIGINT)
    assert code == 0, up.output()
    # the API port is released: the children are gone
    wait_until(lambda: not _listening(port), 10, "the API port was not released")


def test_genq_up_stops_with_the_reason_when_a_model_fails_to_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    env = {"DATABASE_URL": "", "GENQ_BROKER_URL": "", "GENQ_BROKER_KEY_PREFIX": "",
           "GENQ_MODELS": f"broken={broken}"}  # preloaded first (names in order), so no other model loads
    up = Child(["up", "--port", str(free_port())], env, cwd=tmp_path)
    try:
        up.proc.wait(timeout=120)  # the file fails to load at once
    finally:
        code = up.stop()
    assert code == 1, up.output()
    assert "the worker could not load a model" in up.output() and "genq is up" not in up.output()


def _listening(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        return True
    except requests.ConnectionError:
        return False
