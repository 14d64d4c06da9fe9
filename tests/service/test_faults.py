"""Faults survived, each with real processes: a private PostgreSQL and Redis, `genq api`, two model workers
(restarted when they die, as a supervisor would), a webhook worker and a receiver (tests/faults/cluster.py).
Each test injects one fault and checks that no job is lost, none has two results and none stays running.
The last runs a short total-queue fault run (tests/faults/run.py) with several faults at random moments.
"""
from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from faults.checker import check
from faults.cluster import Cluster, Config, wait_until
from faults.poison_worker import POISON_PROMPT
from faults.run import fault_run
from private_postgres import _bin_dir
from private_redis import available as redis_available
from tiny_model import tiny_gguf  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_bin_dir() is None or not redis_available(),
                       reason="needs PostgreSQL's server programs and redis-server"),
]

FINISH_S = 300


@pytest.fixture
def cluster(tiny_gguf: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:  # noqa: F811
    config = getattr(request, "param", None) or Config()
    c = Cluster(tiny_gguf, tmp_path, config).start()
    try:
        yield c
    finally:
        c.stop()


def _settled(cluster: Cluster, ids: list[str]) -> None:
    """Every job finished; none lost, none with two results, each webhook under one webhook-id."""
    cluster.wait_terminal(ids, FINISH_S)
    verdict = check(cluster, ids, injected=len(cluster.log))
    assert verdict.ok, (verdict.summary(), verdict.lost, verdict.duplicated, verdict.stuck, cluster.output())


def _submit(cluster: Cluster, n: int, tokens: int, **extra: object) -> list[str]:
    return [cluster.submit(cluster.job_body(tokens, **extra)) for _ in range(n)]


def test_a_worker_killed_mid_batch_has_its_jobs_run_again_elsewhere_or_failed_after_their_attempts(
    cluster: Cluster,
) -> None:
    ids = _submit(cluster, 8, 120)
    victim = cluster.busy_worker()
    held = [j.id for j in cluster.jobs(ids).values() if j.worker_id and j.worker_id.endswith(f":{victim.pid}")]
    cluster.kill_worker(victim)
    _settled(cluster, ids)
    jobs = cluster.jobs(ids)
    for job_id in held:  # taken over by another worker (attempt 2), or out of attempts
        job = jobs[job_id]
        assert (job.status == "succeeded" and job.attempts >= 2) or job.error_code == "attempts_exhausted", job


def test_redis_restarted_and_flushed_while_jobs_are_queued_and_running_loses_no_job(cluster: Cluster) -> None:
    ids = _submit(cluster, 16, 60)
    cluster.busy_worker()  # some running, the rest queued in Redis
    cluster.restart_redis()  # comes back empty: every queued message gone
    ids += _submit(cluster, 4, 60)
    cluster.busy_worker()
    cluster.flush_redis()
    _settled(cluster, ids)
    assert all(j.status == "succeeded" for j in cluster.jobs(ids).values())


def test_with_redis_down_a_job_is_still_accepted_and_published_once_it_is_back(cluster: Cluster) -> None:
    def submit_while_down() -> list[str]:
        ids = []
        for _ in range(6):
            r = requests.post(f"{cluster.url}/v1/jobs", json=cluster.job_body(8), timeout=30)
            assert r.status_code == 202, r.text  # not 503: the job record is the outbox
            ids.append(r.json()["id"])
        assert all(j.status == "queued" for j in cluster.jobs(ids).values())  # recorded, waiting for the broker
        return ids

    ids = cluster.redis_down(5, during=submit_while_down)
    back = time.monotonic()
    wait_until(lambda: all(j.published_at is not None for j in cluster.jobs(ids).values()), 30,
               "the relay did not publish the accepted jobs")
    print(f"published {time.monotonic() - back:.1f}s after Redis came back")
    assert cluster.api is not None and cluster.api.has_line("left for the publish relay"), cluster.output()
    _settled(cluster, ids)
    assert all(j.status == "succeeded" for j in cluster.jobs(ids).values())


def test_sigterm_lets_running_jobs_finish_or_hands_them_back_within_the_grace_never_both(
    cluster: Cluster,
) -> None:
    short = _submit(cluster, 2, 4)
    long = _submit(cluster, 6, 600)  # far longer than the 3 s grace
    victim = cluster.busy_worker()
    cluster.term_worker(victim)
    stopped = time.monotonic()
    victim.proc.wait(cluster.config.shutdown_grace_s + 60)
    took = time.monotonic() - stopped
    assert took < cluster.config.shutdown_grace_s + 30, took  # bounded: the grace, then a prompt hand-back
    ids = short + long
    _settled(cluster, ids)
    handed_back = [line for line in victim.lines if "handed back to the queue" in line]
    stored = [line for line in victim.lines if ": succeeded (attempt" in line]
    for job_id in ids:  # a job the stopping worker stored was not handed back, and the other way round
        assert not (any(job_id in h for h in handed_back) and any(job_id in s for s in stored)), job_id
    assert handed_back, victim.tail()
    assert all(j.status == "succeeded" for j in cluster.jobs(ids).values())


def test_a_poison_job_that_kills_its_worker_fails_after_its_attempts_while_other_jobs_flow(
    cluster: Cluster,
) -> None:
    poison = cluster.submit(cluster.job_body(4, prompt=POISON_PROMPT, max_attempts=2))
    ids = _submit(cluster, 10, 16)
    _settled(cluster, [poison, *ids])
    job = cluster.jobs([poison])[poison]
    assert (job.status, job.error_code, job.attempts) == ("failed", "attempts_exhausted", 2)
    assert all(j.status == "succeeded" for j in cluster.jobs(ids).values())
    assert sum(w.proc.returncode == 86 for w in cluster.workers) == 2  # it killed a worker on each attempt


def test_a_worker_frozen_past_its_lease_has_its_late_result_rejected(cluster: Cluster) -> None:
    ids = _submit(cluster, 2, 300)
    victim = cluster.busy_worker()
    held = [j.id for j in cluster.jobs(ids).values() if j.worker_id and j.worker_id.endswith(f":{victim.pid}")]
    victim.frozen = True
    victim.signal(signal.SIGSTOP)
    # taken over by the other worker once its lease ran out and a sweeper confirmed it
    wait_until(lambda: all(j.attempts >= 2 for j in cluster.jobs(held).values()), 120, "no takeover")
    victim.signal(signal.SIGCONT)
    victim.frozen = False
    _settled(cluster, ids)
    wait_until(lambda: any("lost its claim" in line or "no longer running under attempt" in line
                           for line in victim.lines), 60, "the frozen worker did not drop its late result")
    events = cluster.status_events(held)
    for job_id in held:
        assert sum(e == "succeeded" for e in events[job_id]) == 1, events[job_id]


def test_a_short_fault_run_loses_nothing(tiny_gguf: Path, tmp_path: Path) -> None:  # noqa: F811
    verdict = fault_run(tiny_gguf, tmp_path, jobs=20, seed=7, postgres_down_s=5, redis_down_s=3, poison=0,
                        faults=("kill9", "redis_flush", "redis_down", "postgres_down"), submit_s=10)
    print(verdict.summary())
    assert verdict.ok, verdict
