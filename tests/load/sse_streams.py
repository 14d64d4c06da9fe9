"""Do idle event streams slow other requests? (not a test: a bounded measurement on loopback)

    PYTHONPATH=. python tests/load/sse_streams.py [--streams 1000] [--requests 300] [--database-url URL]

Starts `genq api` on a free loopback port (a fresh SQLite file and a file-system broker in a temporary
folder unless --database-url names a migrated-or-empty database; the API needs no worker), submits one job
that stays queued, and times `POST /v1/jobs` (submit), `GET /v1/jobs/{id}` (poll) and `GET /healthz`, one
after the other on one keep-alive connection, in three phases: no streams, N idle SSE streams open on that
job, no streams again (after the streams closed and the server saw them go). It prints p50/p99 per phase
and the ratio of the streams phase to the mean of the two others, then stops the API. The caps are raised
to N for the run; everything else is the default (keep-alive comments every 15 s). It stops by itself
(--timeout, default 300 s).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
OPEN_WAVE = 100  # streams opened at once (the server's listen backlog is 128)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300, help="timed requests of each kind per phase")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--timeout", type=int, default=300, help="seconds before the run gives up")
    args = parser.parse_args(argv)
    def give_up(*_: Any) -> None:
        raise TimeoutError(f"the run took over {args.timeout}s")

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(args.timeout)
    with tempfile.TemporaryDirectory(prefix="genq-sse-") as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": args.database_url or f"sqlite:///{tmp}/genq.db",
            "GENQ_BROKER_URL": f"filesystem://{tmp}/broker",
            "GENQ_EVENTS_MAX_STREAMS": str(args.streams),
            "GENQ_EVENTS_MAX_STREAMS_PER_CLIENT": str(args.streams),
        }
        subprocess.run([sys.executable, "-m", "genq", "db", "upgrade"], env=env, check=True, capture_output=True)
        log = Path(tmp) / "api.log"  # a file, not a pipe: werkzeug logs every request, and a full pipe blocks
        with log.open("w") as out:
            api = subprocess.Popen([sys.executable, "-m", "genq", "api", "--server", "werkzeug", "--host", "127.0.0.1",
                                    "--port", "0"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = _wait_listening(api, log)
            print(json.dumps(measure(url, args.streams, args.requests)), flush=True)
        finally:
            api.terminate()
            try:
                api.wait(10)
            except subprocess.TimeoutExpired:
                api.kill()
    return 0


def measure(url: str, streams: int, n: int) -> dict[str, Any]:
    http = requests.Session()
    job_id = http.post(f"{url}/v1/jobs", json={"prompt": "stays queued"}, timeout=30).json()["id"]
    _timed(http, url, job_id, 20)  # warm-up: imports, connection pool
    before = _timed(http, url, job_id, n)
    t0 = time.monotonic()
    sockets = _open_streams(url, job_id, streams)
    opened_s = time.monotonic() - t0
    during = _timed(http, url, job_id, n)
    ended = _ended(sockets)
    for s in sockets:
        s.close()
    time.sleep(16)  # the server notices a closed stream at its next keep-alive write (every 15 s)
    after = _timed(http, url, job_id, n)
    out: dict[str, Any] = {"streams": streams, "requests_per_kind": n, "open_s": round(opened_s, 2),
                           "streams_ended_early": ended}
    for kind in before:
        base = {q: (before[kind][q] + after[kind][q]) / 2 for q in ("p50", "p99")}
        out[kind] = {"none_before": before[kind], "with_streams": during[kind], "none_after": after[kind],
                     "ratio_p50": round(during[kind]["p50"] / base["p50"], 2),
                     "ratio_p99": round(during[kind]["p99"] / base["p99"], 2)}
    return out


def _timed(http: requests.Session, url: str, job_id: str, n: int) -> dict[str, dict[str, float]]:
    """n of each request, interleaved; milliseconds."""
    times: dict[str, list[float]] = {"submit": [], "poll": [], "healthz": []}
    for _ in range(n):
        for kind, call in (
            ("submit", lambda: http.post(f"{url}/v1/jobs", json={"prompt": "hi"}, timeout=60)),
            ("poll", lambda: http.get(f"{url}/v1/jobs/{job_id}", timeout=60)),
            ("healthz", lambda: http.get(f"{url}/healthz", timeout=60)),
        ):
            t = time.perf_counter()
            response = call()
            times[kind].append((time.perf_counter() - t) * 1000)
            if response.status_code >= 300:
                raise RuntimeError(f"{kind}: {response.status_code} {response.text[:300]}")
    return {k: {"p50": round(_q(v, 0.5), 2), "p99": round(_q(v, 0.99), 2)} for k, v in times.items()}


def _q(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] if len(values) > 1 else values[0]


def _open_streams(url: str, job_id: str, count: int) -> list[socket.socket]:
    """`count` event streams on `job_id`, each past its response headers (200) and left unread."""
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Accept: text/event-stream\r\n\r\n").encode()
    opened: list[socket.socket] = []
    while len(opened) < count:
        wave = [socket.create_connection((host, int(port)), timeout=30)
                for _ in range(min(OPEN_WAVE, count - len(opened)))]
        for s in wave:
            s.sendall(request)
        for s in wave:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"stream {len(opened)} closed before its headers: {head[:200]!r}")
                head += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream {len(opened)} refused: {head[:300]!r}")
            opened.append(s)
    return opened


def _ended(sockets: list[socket.socket]) -> int:
    """How many of the streams the server has closed (it should have closed none: the job is live)."""
    ended = 0
    for s in sockets:
        s.setblocking(False)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    ended += 1
                    break
        except BlockingIOError:
            pass  # open, nothing more to read
    return ended


def _wait_listening(api: subprocess.Popen[bytes], log: Path) -> str:
    while api.poll() is None:
        for line in log.read_text().splitlines():
            if "listening on " in line:
                return line.split("listening on ", 1)[1].strip()
        time.sleep(0.1)
    raise RuntimeError(f"genq api exited ({api.returncode}) before listening:\n{log.read_text()[-2000:]}")


if __name__ == "__main__":
    sys.exit(main())
