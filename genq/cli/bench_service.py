"""`genq bench --through-service`: the benchmark workload through the whole path (API, database, broker, worker).

The workload file is the one `genq bench --workload` and the peers read. Every line becomes one line of a
batch (`POST /v1/batches`), so all jobs are created in one transaction and queued at once; the clock runs
from that request until the batch's last job has finished, and the useful tokens are the jobs' completion
tokens as the API reports them. The printed JSON line has the engine bench's keys, so the two compare as a ratio.

Without `--url` the service is started here (`genq up` on a fresh port, in this environment: embedded
SQLite and file-system broker by default, Postgres and Redis when DATABASE_URL / GENQ_BROKER_URL say so)
and stopped afterwards; one warm-up job runs first so the model's load is not timed.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import requests

from genq.status import JobStatus
from models.engine.bench import line_params, read_workload  # torch-free: the workload format lives there

POLL_S = 0.2
READY_TIMEOUT_S = 300.0


def batch_lines(workload: list[dict[str, Any]], model: str | None) -> str:
    """The workload as a batch upload: one job request per line, keyed by the workload's ids."""
    out = []
    for line in workload:
        job: dict[str, Any] = {"custom_id": str(line["id"]), "params": line_params(line)}
        job["messages" if "messages" in line else "prompt"] = line.get("messages", line.get("prompt"))
        if model:
            job["model"] = model
        out.append(json.dumps(job, ensure_ascii=False))
    return "\n".join(out) + "\n"


def run_through_service(url: str, workload: list[dict[str, Any]], model: str | None = None,
                        timeout_s: float = 3600.0) -> dict[str, Any]:
    """Submit the workload as one batch to the service at `url`, wait for it; the figures as one dict."""
    session = requests.Session()
    _finish(session, url, _post_job(session, url, {"prompt": "Hello", "params": {"max_new_tokens": 2},
                                                   **({"model": model} if model else {})}), timeout_s)
    start = time.perf_counter()
    r = session.post(f"{url}/v1/batches", data=batch_lines(workload, model).encode(),
                     headers={"content-type": "application/jsonl"}, timeout=120)
    if r.status_code >= 300:
        raise RuntimeError(f"batch refused: {r.status_code} {r.text[:500]}")
    batch_id = r.json()["id"]
    deadline = time.monotonic() + timeout_s
    while True:
        batch = session.get(f"{url}/v1/batches/{batch_id}", timeout=30).json()
        if batch["status"] == "completed":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} unfinished after {timeout_s:g}s: {batch['counts']}")
        time.sleep(POLL_S)
    seconds = time.perf_counter() - start
    results = session.get(f"{url}/v1/batches/{batch_id}/results", timeout=120)
    jobs = [json.loads(x)["job"] for x in results.text.splitlines() if x.strip()]
    useful = sum((j.get("output") or {}).get("usage", {}).get("completion_tokens", 0) or 0
                 for j in jobs if j["status"] == "succeeded")
    return {"system": "genq-service", "requests": len(jobs), "useful_new_tokens": useful,
            "seconds": round(seconds, 2), "useful_tok_per_s": round(useful / seconds, 1),
            "succeeded": sum(j["status"] == "succeeded" for j in jobs)}


def _post_job(session: requests.Session, url: str, body: dict[str, Any]) -> str:
    r = session.post(f"{url}/v1/jobs", json=body, timeout=30)
    r.raise_for_status()
    return r.json()["id"]


def _finish(session: requests.Session, url: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = session.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] not in JobStatus.LIVE:
            if job["status"] != "succeeded":
                raise RuntimeError(f"warm-up job ended {job['status']}: {job.get('error')}")
            return job
        time.sleep(POLL_S)
    raise TimeoutError("the warm-up job did not finish")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Service:
    """`genq up` on a free port in a scratch directory, for the length of a with-block."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="genq-bench-")

    def __enter__(self) -> _Service:
        self._proc = subprocess.Popen([sys.executable, "-m", "genq", "up", "--port", str(self.port)],
                                      cwd=self._dir.name, env=dict(os.environ), start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"genq up exited with status {self._proc.returncode}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the service did not come up")

    def __exit__(self, *exc: object) -> None:
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._dir.cleanup()


def main(workload_path: str, url: str | None = None, model: str | None = None) -> int:
    """Run the benchmark and print its JSON line; returns 0 when every job succeeded."""
    workload = read_workload(workload_path)
    with _Service() if url is None else nullcontext(SimpleNamespace(url=url.rstrip("/"))) as service:
        result = run_through_service(service.url, workload, model)
    print(json.dumps(result))
    return 0 if result["succeeded"] == result["requests"] else 1

