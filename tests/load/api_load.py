"""Submit and poll throughput of `genq api` as deployed (not a test: a bounded, open-loop measurement)

    PYTHONPATH=. python tests/load/api_load.py --submit-rate 400 --poll-rate 800 [--duration 60]
    PYTHONPATH=. python tests/load/api_load.py --find [--step-seconds 10]   # the highest rates with p99 < 50 ms

Starts `genq api` (gunicorn; GENQ_API_WORKERS / GENQ_API_THREADS from --workers / --threads) with API keys
required, on a fresh PostgreSQL database (made on --postgres, dropped at the end) and Redis (--redis, under a
key prefix of its own, deleted at the end). No worker runs, so every job stays queued and generation does not
compete. One API key with quotas (so the quota path is measured too; --no-quota: a key without) sends
everything.

Two phases: `POST /v1/jobs` (`max_new_tokens` 1) at a fixed rate for --duration seconds, then
`GET /v1/jobs/{id}` of the jobs just made at its fixed rate. The load is open-loop: request i is due at
start + i / rate whatever the answers do, and its latency counts from when it was due (so a server that
falls behind is charged for the wait; no coordinated omission). Requests go over up to --connections
keep-alive HTTP/1.1 connections of one asyncio client. An error is any answer but 202 (submit) / 200 (poll),
or no answer. Prints one JSON line per phase: rates, p50 / p90 / p99 / max in ms, errors, the load average.
--find runs --step-seconds phases at increasing rates until p99 passes --p99-ms (or errors appear), then
runs the best rate of each kind for --duration seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUBMIT_BODY = json.dumps({"prompt": "Hi", "params": {"max_new_tokens": 1}}).encode()


@dataclass
class Phase:
    kind: str
    rate: float
    duration: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    late_starts: int = 0  # requests sent over 5 ms after they were due (the client itself behind)

    def summary(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

        return {"phase": self.kind, "target_rate": self.rate, "duration_s": self.duration,
                "requests": len(lat) + self.errors, "achieved_rate": round(len(lat) / elapsed, 1),
                "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                "errors": self.errors, "statuses": self.statuses, "late_client_starts": self.late_starts,
                "loadavg": [round(x, 2) for x in os.getloadavg()]}


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read its answer (Content-Length bodies only)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            raise ConnectionResetError("the server closed the connection")  # counted as an error, reconnected
        return status, data


async def run_phase(host: str, port: int, key: str, phase: Phase, ids: list[str], max_connections: int) -> float:
    auth = f"Authorization: Bearer {key}\r\n".encode()
    submit_head = (b"POST /v1/jobs HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\n" + auth +
                   b"Content-Length: %d\r\n\r\n" % len(SUBMIT_BODY))
    idle: list[Connection] = []
    opened = 0
    waiting: asyncio.Queue[Connection] = asyncio.Queue()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        nonlocal opened
        conn = idle.pop() if idle else None
        if conn is None:
            if opened < max_connections:
                opened += 1
                try:
                    conn = await Connection.open(host, port)
                except OSError:
                    opened -= 1
                    phase.errors += 1
                    return
            else:
                conn = await waiting.get()
        if loop.time() - due > 0.005:
            phase.late_starts += 1
        if phase.kind == "submit":
            head, body = submit_head, SUBMIT_BODY
        else:
            head, body = (b"GET /v1/jobs/%s HTTP/1.1\r\nHost: l\r\n" % ids[i % len(ids)].encode() + auth + b"\r\n"), b""
        try:
            try:
                status, data = await conn.request(head, body)
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                # a kept-alive connection the server closed while idle (gunicorn's keepalive is 5 s): once more
                # on a new one, as an HTTP client does; its time still counts from when the request was due
                conn.writer.close()
                conn = await Connection.open(host, port)
                status, data = await conn.request(head, body)
        except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            phase.errors += 1
            opened -= 1
            return
        phase.statuses[status] = phase.statuses.get(status, 0) + 1
        if status == (202 if phase.kind == "submit" else 200):
            phase.latencies_ms.append((loop.time() - due) * 1000)
            if phase.kind == "submit":
                start = data.find(b'"id":"') + 6
                phase.ids.append(data[start:start + 36].decode())
        else:
            phase.errors += 1
        if waiting._getters:  # type: ignore[attr-defined]  # someone waits for a connection: hand it over
            waiting.put_nowait(conn)
        else:
            idle.append(conn)

    start = loop.time() + 0.05
    n = int(phase.rate * phase.duration)
    for i in range(n):
        due = start + i / phase.rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, unfinished = await asyncio.wait(list(tasks), timeout=30)
        for task in unfinished:  # no answer within 30 s of the last send: an error
            task.cancel()
            phase.errors += 1
    elapsed = loop.time() - start
    for conn in idle:
        conn.writer.close()
    return elapsed


def measure(url: str, key: str, kind: str, rate: float, duration: float, ids: list[str], connections: int) -> Phase:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    phase = Phase(kind, rate, duration)
    elapsed = asyncio.run(run_phase(host, int(port), key, phase, ids, connections))
    print(json.dumps(phase.summary(elapsed)), flush=True)
    return phase


def passes(phase: Phase, p99_ms: float) -> bool:
    lat = sorted(phase.latencies_ms)
    return phase.errors == 0 and bool(lat) and lat[min(len(lat) - 1, int(0.99 * len(lat)))] < p99_ms


@contextmanager
def service(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(base URL, an API key) of a `genq api` on a fresh PostgreSQL database and a private Redis prefix."""
    import psycopg
    import redis

    from genq.store import migrate
    from genq.store.api_keys import ApiKeyStore
    from genq.store.db import make_engine, make_session_factory

    name = f"genq_load_{secrets.token_hex(4)}"
    prefix = f"genq-load-{secrets.token_hex(4)}:"
    admin = args.postgres.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = "postgresql+psycopg://" + args.postgres.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    api = None
    try:
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        limits = {} if args.no_quota else {"max_concurrent": 10**9, "tokens_per_day": 10**12}
        key = ApiKeyStore(make_session_factory(engine)).create("load", **limits)[1]
        engine.dispose()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database_url, "GENQ_BROKER_URL": args.redis,
               "GENQ_BROKER_KEY_PREFIX": prefix, "GENQ_AUTH": "keys", "GENQ_API_WORKERS": str(args.workers),
               "GENQ_API_THREADS": str(args.threads), "GENQ_LOG_LEVEL": "WARNING"}
        with tempfile.TemporaryDirectory(prefix="genq-load-") as tmp:
            log = Path(tmp) / "api.log"
            with log.open("w") as out:
                api = subprocess.Popen([sys.executable, "-m", "genq", "api", "--host", "127.0.0.1", "--port", "0"],
                                       cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            url = _wait_listening(api, log)
            _wait_healthy(url)
            print(json.dumps({"api": url, "pid": api.pid, "workers": args.workers, "threads": args.threads}),
                  flush=True)
            yield url, key
    finally:
        if api is not None:
            api.send_signal(signal.SIGTERM)
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                api.kill()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


def _wait_listening(api: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while api.poll() is None and time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "listening on " in line:
                return line.split("listening on ", 1)[1].split()[0]
        time.sleep(0.1)
    raise RuntimeError(f"genq api did not start ({api.returncode}):\n{log.read_text()[-2000:]}")


def _wait_healthy(url: str) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("genq api is not healthy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submit-rate", type=float, default=200)
    parser.add_argument("--poll-rate", type=float, default=400)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--find", action="store_true", help="step the rates up to the highest passing, then run it")
    parser.add_argument("--rates", default="100,200,300,400,600,800,1000,1200,1500,2000,2500,3000",
                        help="with --find: the rates tried, in order")
    parser.add_argument("--step-seconds", type=float, default=10)
    parser.add_argument("--p99-ms", type=float, default=50)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-quota", action="store_true", help="the key has no quotas (no quota path, no key lock)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)

    with service(args) as (url, key):
        # not measured: every worker process's pools, tokenizer, prepared statements and queue snapshot
        warm = measure(url, key, "submit", 100, 5, [], args.connections)
        measure(url, key, "poll", 200, 3, warm.ids, args.connections)
        if not args.find:
            made = measure(url, key, "submit", args.submit_rate, args.duration, [], args.connections)
            measure(url, key, "poll", args.poll_rate, args.duration, made.ids or warm.ids, args.connections)
            return 0
        rates = [float(r) for r in args.rates.split(",")]
        best: dict[str, float] = {}
        ids: list[str] = list(warm.ids)
        for kind in ("submit", "poll"):
            for rate in rates:
                phase = measure(url, key, kind, rate, args.step_seconds, ids, args.connections)
                ids += phase.ids
                if not passes(phase, args.p99_ms):
                    break
                best[kind] = rate
        print(json.dumps({"best_step_rates": best}), flush=True)
        made = measure(url, key, "submit", best.get("submit", rates[0]), args.duration, [], args.connections)
        measure(url, key, "poll", best.get("poll", rates[0]), args.duration, made.ids or ids, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
