"""A whole genq service of real processes for fault tests: a private PostgreSQL and a private Redis, `genq api`,
model workers (through the poison hook, tests/faults/poison_worker.py) restarted like a supervisor would when
they die, a webhook worker, and a webhook receiver on 127.0.0.1. Faults are methods: `kill_worker`,
`term_worker`, `freeze_worker`, `restart_redis`, `flush_redis`, `redis_down`, `postgres_down`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from e2e_helpers import free_port, wait_until
from private_postgres import PrivatePostgres, _bin_dir
from private_redis import PrivateRedis
from sqlalchemy import Engine, create_engine, select
from webhooks.receiver import Receiver

from genq.store import migrate
from genq.store.schema import Job, JobEvent

ROOT = Path(__file__).resolve().parents[2]
POISON_WORKER = Path(__file__).with_name("poison_worker.py")
TERMINAL = ("succeeded", "failed", "canceled", "expired")
MODEL = "tiny"


class Proc:
    """A child process whose output is collected line by line (its own session: signals reach it alone)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path):
        self.name = name
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.frozen = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def has_line(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)

    def wait_for_line(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.has_line(needle):
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {needle!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {needle!r} within {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            if self.frozen:
                self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])


@dataclass
class Config:
    workers: int = 2
    batch: int = 4
    lease_s: int = 3
    shutdown_grace_s: int = 3
    republish_after_s: int = 5
    start_timeout_s: float = 240
    restart_workers: bool = True  # a dead model worker is started again, as a supervisor would
    env: dict[str, str] = field(default_factory=dict)


class Cluster:
    def __init__(self, tiny_gguf: Path, workdir: Path, config: Config | None = None):
        self.config = config or Config()
        self.workdir = workdir
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) are not installed")
        self.pg = PrivatePostgres(bin_dir)
        self.redis = PrivateRedis()
        self.receiver = Receiver()
        self.tiny_gguf = tiny_gguf
        self.workers: list[Proc] = []  # every model worker started, dead ones included
        self.api: Proc | None = None
        self.webhook_worker: Proc | None = None
        self.db: Engine | None = None
        self.url = ""
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()
        self.log: list[str] = []  # what was injected, when

    # ---- start and stop ----

    def start(self) -> Cluster:
        self.pg.start()
        database_url = self.pg.create_database()
        migrate.upgrade(database_url)
        self.db = create_engine(database_url, pool_pre_ping=True, connect_args={"connect_timeout": 3})
        self.redis.start()
        port = free_port()
        self.env = {
            "DATABASE_URL": database_url,
            "GENQ_BROKER_URL": self.redis.url(),
            "GENQ_MODELS": f"{MODEL}={self.tiny_gguf}",
            "GENQ_DEFAULT_MODEL": MODEL,
            "GENQ_BATCH_SIZE": str(self.config.batch),
            "GENQ_LEASE_SECONDS": str(self.config.lease_s),
            "GENQ_SWEEP_INTERVAL": "1",
            "GENQ_REPUBLISH_AFTER": str(self.config.republish_after_s),
            "GENQ_SHUTDOWN_GRACE": str(self.config.shutdown_grace_s),
            "GENQ_JOB_TIMEOUT": "300",
            "GENQ_BROKER_VISIBILITY_TIMEOUT": "600",
            "GENQ_WEBHOOK_ALLOW": "127.0.0.1",
            "GENQ_WEBHOOK_SWEEP_MS": "500",
            "GENQ_WEBHOOK_RETRY_SCHEDULE": "1,2,4,8,16,32,60,60,60,60",
            "GENQ_HOST": "127.0.0.1",
            "GENQ_PORT": str(port),
            # one compute thread per process: several processes share few cores, and spinning OpenMP threads
            # of oversubscribed processes slow every one of them many times over
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            **self.config.env,
        }
        self.api = Proc("api", [sys.executable, "-m", "genq", "api"], self.env, self.workdir)
        self.url = f"http://127.0.0.1:{port}"
        self.webhook_worker = Proc("webhook-worker", [sys.executable, "-m", "genq", "worker", "--queues", "webhooks"],
                                   self.env, self.workdir)
        for _ in range(self.config.workers):
            self.start_worker()
        self.api.wait_for_line("listening on", self.config.start_timeout_s)
        for w in self.workers:
            w.wait_for_line("ready in", self.config.start_timeout_s)  # its model loaded
        self.webhook_worker.wait_for_line("ready", self.config.start_timeout_s)
        if self.config.restart_workers:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()
        return self

    def start_worker(self) -> Proc:
        with self._lock:
            n = len(self.workers)
            w = Proc(f"worker-{n}", [sys.executable, str(POISON_WORKER), "worker", "--models", MODEL, "--queues",
                                     "models"], self.env, self.workdir)
            self.workers.append(w)
        return w

    def live_workers(self) -> list[Proc]:
        with self._lock:
            return [w for w in self.workers if w.alive()]

    def _supervise(self) -> None:
        """Keep `config.workers` model workers alive (a frozen one counts as alive)."""
        while not self._stop.wait(0.5):
            if len(self.live_workers()) < self.config.workers:
                w = self.start_worker()
                self.note(f"restarted a model worker as {w.name} (pid {w.pid})")

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for p in [*self.workers, self.webhook_worker, self.api]:
            if p is not None:
                p.stop()
        self.receiver.close()
        if self.db is not None:
            self.db.dispose()
        self.redis.destroy()
        self.pg.destroy()

    def note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")

    # ---- faults ----

    def busy_worker(self, timeout: float = 120) -> Proc:
        """A live model worker holding a running job (found by the job's worker_id, host:pid)."""
        def find() -> Proc | None:
            pids = {int(w.rsplit(":", 1)[1]) for w in self.running_worker_ids() if ":" in w}
            return next((w for w in self.live_workers() if w.pid in pids and not w.frozen), None)
        return wait_until(find, timeout, "no worker held a running job")

    def kill_worker(self, w: Proc) -> None:
        self.note(f"kill -9 {w.name} (pid {w.pid})")
        w.signal(signal.SIGKILL)
        w.proc.wait()

    def term_worker(self, w: Proc) -> None:
        self.note(f"SIGTERM {w.name} (pid {w.pid})")
        w.signal(signal.SIGTERM)

    def freeze_worker(self, w: Proc, seconds: float) -> None:
        self.note(f"SIGSTOP {w.name} (pid {w.pid}) for {seconds:.0f}s")
        w.frozen = True
        w.signal(signal.SIGSTOP)
        time.sleep(seconds)
        w.signal(signal.SIGCONT)
        w.frozen = False
        self.note(f"SIGCONT {w.name}")

    def restart_redis(self) -> None:
        self.note("Redis restarted (comes back empty)")
        self.redis.restart()

    def flush_redis(self) -> None:
        self.note("Redis flushed")
        self.redis.flush()

    def redis_down(self, seconds: float, during: Callable[[], Any] | None = None) -> Any:
        self.note(f"Redis down for {seconds:.0f}s")
        self.redis.stop()
        started = time.monotonic()
        result = during() if during is not None else None
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        self.redis.start()
        self.note("Redis back")
        return result

    def postgres_down(self, seconds: float, during: Callable[[], Any] | None = None) -> Any:
        self.note(f"PostgreSQL down for {seconds:.0f}s")
        self.pg.stop()
        started = time.monotonic()
        result = during() if during is not None else None
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        self.pg.start()
        self.note("PostgreSQL back")
        return result

    # ---- the client side ----

    def submit(self, body: dict[str, Any], timeout: float = 120) -> str:
        """POST the job until it is accepted (retrying 503s and lost connections under one Idempotency-Key, as a
        careful client does); returns its id. Raises on any other answer, a 500 above all."""
        key = f"fault-{uuid.uuid4()}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = requests.post(f"{self.url}/v1/jobs", json=body, headers={"Idempotency-Key": key}, timeout=30)
            except requests.RequestException:
                r = None
            if r is not None and r.status_code in (200, 202):
                return str(r.json()["id"])
            if r is not None and r.status_code != 503:
                raise AssertionError(f"POST /v1/jobs answered {r.status_code}: {r.text}")
            if r is not None:
                assert int(r.headers["Retry-After"]) > 0, r.headers
            if time.monotonic() > deadline:
                raise TimeoutError(f"job not accepted within {timeout}s")
            time.sleep(0.5)

    def job_body(self, tokens: int, **extra: Any) -> dict[str, Any]:
        return {"model": MODEL, "prompt": "Tell a story.", "webhook": self.receiver.url(),
                "params": {"max_new_tokens": tokens, "ignore_eos": True}, **extra}

    # ---- reading the record (straight from the database) ----

    def jobs(self, ids: list[str]) -> dict[str, Job]:
        assert self.db is not None
        from sqlalchemy.orm import Session

        found: dict[str, Job] = {}
        with Session(self.db) as session:
            for i in range(0, len(ids), 500):
                for job in session.scalars(select(Job).where(Job.id.in_(ids[i:i + 500]))):
                    found[job.id] = job
                    session.expunge(job)
        return found

    def status_events(self, ids: list[str]) -> dict[str, list[str]]:
        """Each job's status events, in order (its state changes as the event log recorded them)."""
        assert self.db is not None
        out: dict[str, list[str]] = {i: [] for i in ids}
        with self.db.connect() as conn:
            for i in range(0, len(ids), 500):
                rows = conn.execute(select(JobEvent.job_id, JobEvent.data).where(
                    JobEvent.job_id.in_(ids[i:i + 500]), JobEvent.kind == "status").order_by(JobEvent.seq))
                for job_id, data in rows:
                    out[job_id].append(data["status"])
        return out

    def running_worker_ids(self) -> list[str]:
        assert self.db is not None
        with self.db.connect() as conn:
            return [w for (w,) in conn.execute(select(Job.worker_id).where(Job.status == "running")) if w]

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, Job]:
        """Wait until every job is terminal (or the timeout); returns the jobs as last read."""
        deadline = time.monotonic() + timeout
        jobs: dict[str, Job] = {}
        while time.monotonic() < deadline:
            try:
                jobs = self.jobs(ids)
            except Exception:  # the database is away for a moment
                time.sleep(0.5)
                continue
            if len(jobs) == len(ids) and all(j.status in TERMINAL for j in jobs.values()):
                return jobs
            time.sleep(0.5)
        return jobs

    def output(self) -> str:
        parts = [f"--- {p.name} (pid {p.pid}, rc {p.proc.poll()})\n{p.tail(40)}"
                 for p in [self.api, self.webhook_worker, *self.workers] if p is not None]
        return "\n".join(["--- injected", *self.log, *parts])

