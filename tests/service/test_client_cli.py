"""The command-line client (`genq submit`, `genq jobs ...`, `genq batch ...`) against a running service:
the API, PostgreSQL, a file-system broker and a worker serving the tiny model (the text does not matter here)."""
from __future__ import annotations

import http.server
import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_helpers import ROOT, free_port, wait_for_job, wait_until
from live_service import LiveService
from tiny_model import TINY_MODEL, tiny_gguf  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

PARAMS = ["--model", TINY_MODEL, "--param", "max_new_tokens=12", "--param", "seed=7", "--param", "temperature=0.8"]


@pytest.fixture(scope="module")
def service(postgres_database: Callable[[], str], tiny_gguf: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    svc = LiveService(postgres_database(), tmp_path_factory.mktemp("cli"), {"GENQ_MODELS": f"{TINY_MODEL}={tiny_gguf}"},
                      ["--models", TINY_MODEL, "--queues", "models"])
    yield svc
    svc.stop()


def genq(url: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
         **kwargs: Any) -> subprocess.CompletedProcess[str]:
    if "stderr" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([sys.executable, "-m", "genq", *args], cwd=ROOT, input=stdin, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "GENQ_URL": url, "GENQ_API_KEY": "",
                               **(env or {})}, **kwargs)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_submit_wait_prints_the_generated_text(service: LiveService) -> None:
    result = genq(service.url, "submit", "Tell me a story.", *PARAMS, "--wait")
    assert result.returncode == 0, result.stderr
    job = requests.get(f"{service.url}/v1/jobs", params={"limit": 1}, timeout=10).json()["data"][0]
    assert job["status"] == "succeeded" and job["input"] == {"prompt": "Tell me a story."}
    assert result.stdout == job["output"]["text"] + "\n"


def test_submit_json_prints_the_queued_job_and_chat_sends_messages(service: LiveService) -> None:
    job = ok_json(genq(service.url, "submit", "Hi", "--chat", "--system", "Be brief.", *PARAMS, "--json",
                       "--metadata", "team=a"))
    assert job["object"] == "job" and job["status"] in ("queued", "running", "succeeded")
    assert job["input"] == {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert job["params"]["max_new_tokens"] == 12 and job["metadata"] == {"team": "a"}


def test_submit_stream_prints_the_text_as_the_job_output(service: LiveService) -> None:
    result = genq(service.url, "submit", "Count to ten.", *PARAMS, "--stream")
    assert result.returncode == 0, result.stderr
    job = requests.get(f"{service.url}/v1/jobs", params={"limit": 1}, timeout=10).json()["data"][0]
    assert result.stdout == job["output"]["text"] + "\n" and job["output"]["text"]


def test_submit_stream_json_prints_each_event_ending_with_done(service: LiveService) -> None:
    result = genq(service.url, "submit", "Count to ten.", *PARAMS, "--stream", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stderr
    assert events[-1]["event"] == "done" and events[-1]["data"]["status"] == "succeeded"
    text = "".join(e["data"]["text"] for e in events if e["event"] == "delta")
    assert text == events[-1]["data"]["output"]["text"]


def test_jobs_list_get_and_filters(service: LiveService) -> None:
    job = ok_json(genq(service.url, "submit", "Hello", *PARAMS, "--json"))
    wait_for_job(service.url, job["id"], 120)
    page = ok_json(genq(service.url, "jobs", "list", "--status", "succeeded", "--limit", "100", "--json"))
    assert job["id"] in [j["id"] for j in page["data"]] and {j["status"] for j in page["data"]} == {"succeeded"}
    assert job["id"] not in [j["id"] for j in ok_json(genq(service.url, "jobs", "list", "--status", "queued",
                                                           "--json"))["data"]]
    human = genq(service.url, "jobs", "list", "--limit", "100")
    assert human.returncode == 0 and human.stdout.startswith("ID") and job["id"] in human.stdout
    got = ok_json(genq(service.url, "jobs", "get", job["id"], "--json"))
    assert got["id"] == job["id"] and got["status"] == "succeeded"
    shown = genq(service.url, "jobs", "get", job["id"])
    assert f"{job['id']} succeeded" in shown.stdout and got["output"]["text"] in shown.stdout


def test_jobs_cancel_a_queued_job_then_a_finished_one_is_an_api_error(service: LiveService) -> None:
    # the default model has no worker here: its job stays queued
    job = ok_json(genq(service.url, "submit", "Hello", "--json"))
    result = genq(service.url, "jobs", "cancel", job["id"])
    assert result.returncode == 0 and result.stdout == f"{job['id']} canceled\n"
    done = ok_json(genq(service.url, "submit", "Hi", *PARAMS, "--wait", "--json"))
    refused = genq(service.url, "jobs", "cancel", done["id"])
    assert refused.returncode == 1 and "409 job_finished" in refused.stderr and refused.stdout == ""


def test_api_errors_print_code_and_field_and_exit_1(service: LiveService) -> None:
    bad = genq(service.url, "submit", "Hi", "--param", "top_p=7")
    assert bad.returncode == 1
    assert bad.stderr.startswith("genq: 422 ") and "(field: params.top_p)" in bad.stderr
    missing = genq(service.url, "jobs", "get", "job_doesnotexist")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_an_unreachable_service_exits_3_naming_genq_url() -> None:
    result = genq(f"http://127.0.0.1:{free_port()}", "jobs", "list")
    assert result.returncode == 3 and "GENQ_URL" in result.stderr


def test_a_wait_on_a_job_that_does_not_succeed_exits_4(service: LiveService) -> None:
    # the default model has no worker here: its job stays queued until the thread below cancels it
    marker = os.urandom(4).hex()

    def cancel_when_queued() -> None:
        def queued() -> list[dict[str, Any]]:
            return requests.get(f"{service.url}/v1/jobs", params={"metadata[t]": marker}, timeout=10).json()["data"]
        job = wait_until(queued, 30, "the job was not submitted")[0]
        requests.post(f"{service.url}/v1/jobs/{job['id']}/cancel", timeout=10)

    canceller = threading.Thread(target=cancel_when_queued, daemon=True)
    canceller.start()
    result = genq(service.url, "submit", "Hi", "--metadata", f"t={marker}", "--wait")
    canceller.join(timeout=30)
    assert result.returncode == 4 and "canceled" in result.stderr


def _batch_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"c{i}", "model": TINY_MODEL, "prompt": f"Story {i}.",
                                        "params": {"max_new_tokens": 8}}) + "\n" for i in range(n)))
    return path


def test_batch_submit_wait_then_results_in_file_order(service: LiveService, tmp_path: Path) -> None:
    batch = ok_json(genq(service.url, "batch", "submit", str(_batch_file(tmp_path, 5)), "--wait", "--json"))
    assert batch["status"] == "completed" and batch["counts"].get("succeeded") == 5
    results = genq(service.url, "batch", "results", batch["id"], "--json")
    lines = [json.loads(line) for line in results.stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"c{i}" for i in range(5)]
    assert all(line["job"]["status"] == "succeeded" for line in lines)
    human = genq(service.url, "batch", "results", batch["id"])
    assert human.stdout.startswith("CUSTOM_ID") and len(human.stdout.splitlines()) == 6
    assert genq(service.url, "batch", "get", batch["id"]).stdout.startswith(f"{batch['id']} completed: 5 jobs")


def test_batch_submit_reports_the_bad_line(service: LiveService, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"custom_id": "a", "prompt": "Hi", "params": {"top_p": 7}}\n')
    result = genq(service.url, "batch", "submit", str(path))
    assert result.returncode == 1 and "line[1].params.top_p" in result.stderr


def test_batch_wait_draws_a_progress_bar_on_a_terminal_only(service: LiveService, tmp_path: Path) -> None:
    path = _batch_file(tmp_path, 3)
    plain = genq(service.url, "batch", "submit", str(path), "--wait")
    assert plain.returncode == 0 and plain.stderr == ""
    main, replica = pty.openpty()
    try:
        on_tty = genq(service.url, "batch", "submit", str(path), "--wait", stderr=replica, stdout=subprocess.PIPE)
        os.close(replica)
        drawn = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main)
    assert on_tty.returncode == 0
    assert b"\r[" in drawn and b"3/3 jobs done" in drawn


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.seen.append(self.headers.get("Authorization"))
        body = b'{"data": [], "next_cursor": null, "has_more": false}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_genq_api_key_is_sent_as_a_bearer_token() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert genq(url, "jobs", "list", env={"GENQ_API_KEY": "gk_secret"}).returncode == 0
        assert genq(url, "jobs", "list").returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == ["Bearer gk_secret", None]
