"""Helpers for the end-to-end tests: child processes with captured output, an API server thread, polling."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("GENQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")  # as in tests/conftest.py
TERMINAL = ("succeeded", "failed", "canceled", "expired")


class Child:
    """A `python -m genq ...` child process whose output is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None):
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "genq", *args], env=full_env, cwd=cwd or ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def wait_for_line(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"process exited ({self.proc.returncode}) before {needle!r}:\n{self.output()}")
            time.sleep(0.1)
        raise TimeoutError(f"no line with {needle!r} within {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


class ApiThread:
    """The Flask app served over real HTTP by werkzeug, on a free port, in a daemon thread."""

    def __init__(self, app: Any):
        from api.http_server import make_api_server

        self.server = make_api_server("127.0.0.1", 0, app)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout}s")


def wait_for_job(url: str, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll GET /v1/jobs/<id> until the job is finished; returns the job object."""
    def finished() -> dict[str, Any] | None:
        job = requests.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        return job if job["status"] in TERMINAL else None

    return wait_until(finished, timeout, f"job {job_id} did not finish")


def read_sse(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Parse an SSE stream into {"id", "event", "data"} dicts; comments become {"comment": text}."""
    frame: dict[str, Any] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(": ")
            frame[name] = json.loads(value) if name == "data" else value
