"""The total-queue fault run, Jepsen-style: real processes, faults at seeded random moments, then a checker.

    python -m tests.faults.run --jobs 300 [--seed 1] [--postgres-down 30]

Starts a private PostgreSQL and Redis, `genq api`, `--workers` model workers (restarted when they die, as a
supervisor would), a webhook worker and a webhook receiver on 127.0.0.1 (tests/faults/cluster.py). Submits
`--jobs` jobs of the tiny model with webhooks (a few poison jobs among them, which kill the worker that runs
them) while it injects, in a seeded random order and at random moments: kill -9 of a busy worker, SIGTERM
of one, SIGSTOP past its lease then SIGCONT, a Redis restart (it comes back empty), a Redis flush, Redis down
while jobs are submitted, PostgreSQL down. Then waits until every job is finished and checks
(tests/faults/checker.py). Prints one line, `faults: submitted=N injected=K lost=L duplicated=D stuck=S`
(details go to standard error), and exits 1 unless L, D and S are 0.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, "", "tests.faults"):  # run as a command: the test helpers' folders, as pytest has them
    _TESTS = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(_TESTS), str(_TESTS / "service")]

from tiny_model import write_tiny_gguf  # noqa: E402

from .checker import Verdict, check  # noqa: E402
from .cluster import TERMINAL, Cluster, Config  # noqa: E402
from .poison_worker import POISON_PROMPT  # noqa: E402

FAULTS = ("kill9", "sigterm", "sigstop", "redis_restart", "redis_flush", "redis_down", "postgres_down")


def _faults(cluster: Cluster, postgres_down_s: float, redis_down_s: float) -> dict[str, Callable[[], None]]:
    lease = cluster.config.lease_s
    return {
        "kill9": lambda: cluster.kill_worker(cluster.busy_worker()),
        "sigterm": lambda: cluster.term_worker(cluster.busy_worker()),
        # frozen past its lease and the sweepers' confirmation, so its jobs are taken over meanwhile
        "sigstop": lambda: cluster.freeze_worker(cluster.busy_worker(), 3 * lease + 4),
        "redis_restart": cluster.restart_redis,
        "redis_flush": cluster.flush_redis,
        "redis_down": lambda: cluster.redis_down(redis_down_s),
        "postgres_down": lambda: cluster.postgres_down(postgres_down_s),
    }


def fault_run(tiny_gguf: Path, workdir: Path, jobs: int, seed: int, faults: Sequence[str] = FAULTS,
              postgres_down_s: float = 30, redis_down_s: float = 5, poison: int | None = None,
              submit_s: float | None = None, finish_timeout_s: float = 600, workers: int = 2,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> Verdict:
    """One fault run (see the module docstring); returns the checker's verdict."""
    rng = random.Random(seed)
    poison = max(1, jobs // 100) if poison is None else poison
    submit_s = submit_s if submit_s is not None else max(20.0, jobs / 6)
    cluster = Cluster(tiny_gguf, workdir, Config(workers=workers)).start()
    ids: list[str] = []
    errors: list[BaseException] = []
    try:
        kinds = ["poison" if i < poison else "job" for i in range(jobs)]
        rng.shuffle(kinds)
        bodies = [
            cluster.job_body(rng.randint(1, 6), prompt=POISON_PROMPT, max_attempts=2) if k == "poison"
            else cluster.job_body(rng.randint(4, 40))
            for k in kinds
        ]
        lock = threading.Lock()

        def submitter(part: list[dict]) -> None:
            try:
                for body in part:
                    job_id = cluster.submit(body, timeout=max(120.0, postgres_down_s * 3))
                    with lock:
                        ids.append(job_id)
                    time.sleep(rng.uniform(0, 2 * submit_s * 4 / jobs))
            except BaseException as e:  # reported by the checker's caller
                errors.append(e)

        threads = [threading.Thread(target=submitter, args=(bodies[i::4],), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        started = time.monotonic()
        injectors = _faults(cluster, postgres_down_s, redis_down_s)
        plan = list(faults)
        rng.shuffle(plan)
        injected = 0
        for name in plan:  # one after another, each at a random moment of the submission window (and after)
            time.sleep(rng.uniform(0.5, max(1.0, 1.5 * submit_s / len(plan))))
            try:
                injectors[name]()
                injected += 1
                log(f"[{time.monotonic() - started:6.1f}s] injected {name} ({len(ids)} jobs accepted so far)")
            except TimeoutError as e:  # e.g. no worker busy at that moment
                log(f"[{time.monotonic() - started:6.1f}s] could not inject {name}: {e}")
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        log(f"[{time.monotonic() - started:6.1f}s] all {len(ids)} jobs accepted; waiting for them to finish")
        deadline = time.monotonic() + finish_timeout_s
        while time.monotonic() < deadline:
            jobs_now = cluster.wait_terminal(ids, 10)
            counts: dict[str, int] = {}
            for j in jobs_now.values():
                counts[j.status] = counts.get(j.status, 0) + 1
            log(f"[{time.monotonic() - started:6.1f}s] {counts}")
            if sum(counts.get(s, 0) for s in TERMINAL) == len(ids):
                break
        log(f"[{time.monotonic() - started:6.1f}s] quiet; checking")
        verdict = check(cluster, ids, injected + poison)
        log(f"statuses: {dict(verdict.statuses)}")
        for what in ("lost", "duplicated", "stuck"):
            if getattr(verdict, what):
                log(f"{what}: {getattr(verdict, what)[:20]}")
        if not verdict.ok or os.environ.get("GENQ_FAULTS_VERBOSE"):
            log(cluster.output())
        return verdict
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, from {', '.join(FAULTS)}")
    parser.add_argument("--postgres-down", type=float, default=30.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis stays down")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service's processes on the way out
    with tempfile.TemporaryDirectory(prefix="genq-faults-") as tmp:
        tiny = write_tiny_gguf(Path(tmp) / "tiny.gguf")
        verdict = fault_run(tiny, Path(tmp), args.jobs, args.seed, faults, args.postgres_down, args.redis_down,
                            workers=args.workers)
    print(verdict.summary(), flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
