"""workers.job_runner through a database outage, in one process, on a private PostgreSQL server the test stops.

The engine is a stand-in whose result the test releases while the database is down (the real engine and
worker processes go through the same outage in test_e2e_outage.py). With the lease keeper, the text-event
writer and a sweeper all running, as in a worker, the job must end `succeeded` with its text on its only
attempt, its text event before its final status, and a duplicate message must not take it over.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from private_postgres import PrivatePostgres, private_postgres  # noqa: F401  (fixture)

from genq.broker import Publisher, make_celery
from genq.lifecycle import Schedule
from genq.settings import ModelSpec, Settings
from genq.store import migrate
from genq.store.db import make_engine, make_session_factory
from genq.store.delta_sink import DeltaSink
from genq.store.job_events import read_events_of_jobs
from genq.store.jobs import JobStore
from genq.sweeper import JobSweeper
from models.engine.types import EngineEvent, GenerationRequest, GenerationResult
from workers.engine_host import EngineHost
from workers.job_runner import JobOutcome, execute_job
from workers.lease_keeper import LeaseKeeper

MODEL = "m"
LEASE_S = 2
DOWN_S = 8.0  # four leases: every lease the database holds has run out when it comes back


class GatedEngine:
    """Each request's text is emitted and its result returned once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.submitted = threading.Event()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, request: GenerationRequest, on_event: Callable[[EngineEvent], None] | None = None) -> Any:
        engine = self
        self.submitted.set()

        class Handle:
            def wait(self, timeout: float | None = None) -> GenerationResult:
                if not engine.release.wait(timeout):
                    raise TimeoutError
                if on_event is not None:
                    on_event(EngineEvent("delta", request.request_id, text="Paris"))
                return GenerationResult(text="Paris", finish_reason="eos", prompt_tokens=5, completion_tokens=2)

            def cancel(self) -> None:
                pass

        return Handle()


class Run(threading.Thread):
    def __init__(self, job: Callable[[], JobOutcome]):
        super().__init__(daemon=True)
        self._job, self.outcome = job, None

    def run(self) -> None:
        self.outcome = self._job()


@pytest.fixture
def store(private_postgres: PrivatePostgres) -> Iterator[JobStore]:  # noqa: F811
    url = private_postgres.create_database()
    migrate.upgrade(url)
    engine = make_engine(url)
    yield JobStore(make_session_factory(engine))
    engine.dispose()


def test_a_result_finished_while_the_database_is_down_is_stored_once_it_is_back(
    private_postgres: PrivatePostgres, store: JobStore, tmp_path: Path  # noqa: F811
) -> None:
    settings = Settings.from_env({"DATABASE_URL": "sqlite:///unused.db", "GENQ_BROKER_URL": f"filesystem://{tmp_path}"})
    # the keeper polls slowly, so messages arriving right after the outage find the leases still lapsed; the
    # sweeper waits longer than that before it counts a worker lost, as a worker's does (confirm_lost_after)
    keeper = LeaseKeeper(store, LEASE_S, poll_interval=1.5)
    sweeper = JobSweeper(store, Publisher(make_celery(settings)), interval=0.3, republish_after=1,
                      confirm_lost=5).start()
    events = DeltaSink(store.sessions)
    engine = GatedEngine()
    host = EngineHost({MODEL: ModelSpec(MODEL, source=None, kind="gguf")}, lambda spec: engine)  # type: ignore[arg-type]
    job_id = store.create(model=MODEL, input={"prompt": "capital of France?"}, params={"max_new_tokens": 4},
                          schedule=Schedule(max_attempts=1)).id

    def run(worker: str) -> Run:
        thread = Run(lambda: execute_job(job_id, store, host, worker, timeout=120, keeper=keeper,
                                         lease_seconds=LEASE_S, events=events))
        thread.start()
        return thread

    try:
        first = run("w1")
        assert engine.submitted.wait(30)
        private_postgres.stop()
        engine.release.set()  # the result is ready while nothing can be stored
        # duplicate messages for the job (e.g. a sweeper had re-published it while it was queued)
        during = run("w2")
        time.sleep(DOWN_S)
        private_postgres.start()
        after = run("w3")
        for thread in (first, during, after):
            thread.join(60)
        outcomes = [t.outcome for t in (first, during, after)]
        assert outcomes == [JobOutcome.SUCCEEDED, JobOutcome.SKIPPED, JobOutcome.SKIPPED]
        time.sleep(1.5)  # a few more sweeps with the database back change nothing
    finally:
        sweeper.stop()
        keeper.stop()
        events.stop()
    job = store.get(job_id)
    assert (job.status, job.output_text, job.attempts, job.worker_id) == ("succeeded", "Paris", 1, "w1")
    with store.sessions() as session:
        log = [(e.kind, e.data) for e in read_events_of_jobs(session, {job_id: 0})]
    assert log[-2:] == [("delta", {"text": "Paris"}), ("status", {"status": "succeeded"})], log
