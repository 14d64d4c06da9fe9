"""The job state machine: every transition is one compare-and-set, won at most once."""
from __future__ import annotations

import threading
from datetime import UTC

import pytest

from genq.ids import new_id
from genq.status import JobStatus
from genq.store.db import make_engine, make_session_factory
from genq.store.jobs import JobStore

PARAMS = {"max_new_tokens": 8}


def _job(store: JobStore, **kw):  # type: ignore[no-untyped-def]
    return store.create(model="m", input={"prompt": "hi"}, params=PARAMS, **kw)


def test_created_job_is_queued_with_utc_timestamps(store: JobStore) -> None:
    job = _job(store, metadata={"user": "u1"})
    got = store.get(job.id)
    assert got is not None
    assert (got.status, got.attempts, got.client_metadata) == ("queued", 0, {"user": "u1"})
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == UTC.utcoffset(None)
    assert got.started_at is None and got.completed_at is None


def test_unknown_and_malformed_ids_are_not_found(store: JobStore) -> None:
    assert store.get(new_id()) is None
    assert store.get("not-a-uuid") is None
    assert store.get("'; DROP TABLE jobs; --") is None


def test_get_many_returns_existing_jobs_in_the_order_asked(store: JobStore) -> None:
    a, b = _job(store), _job(store)
    assert [j.id for j in store.get_many([b.id, new_id(), a.id, "junk"])] == [b.id, a.id]


def test_claim_moves_queued_to_running_once_and_counts_the_attempt(store: JobStore) -> None:
    job = _job(store)
    assert store.claim(job.id, "w1").attempt == 1
    assert store.claim(job.id, "w2") is None
    got = store.get(job.id)
    assert (got.status, got.attempts, got.worker_id) == ("running", 1, "w1")
    assert got.started_at is not None


def test_succeed_stores_the_output_and_completes_the_job(store: JobStore) -> None:
    job = _job(store)
    store.claim(job.id, "w")
    assert store.succeed(job.id, text="Paris", finish_reason="eos", prompt_tokens=7, completion_tokens=2)
    got = store.get(job.id)
    assert (got.status, got.output_text, got.finish_reason, got.prompt_tokens, got.completion_tokens) == (
        "succeeded", "Paris", "eos", 7, 2)
    assert got.completed_at is not None and got.completed_at >= got.started_at


def test_a_queued_job_cannot_succeed_without_being_claimed(store: JobStore) -> None:
    job = _job(store)
    assert store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1) is False
    assert store.get(job.id).status == "queued"


def test_terminal_jobs_accept_no_further_transition(store: JobStore) -> None:
    job = _job(store)
    store.claim(job.id, "w")
    store.fail(job.id, "engine_error", "boom")
    assert store.claim(job.id, "w") is None
    assert store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1) is False
    assert store.cancel(job.id) is False
    got = store.get(job.id)
    assert (got.status, got.error_code, got.error_message) == ("failed", "engine_error", "boom")


def test_a_canceled_running_job_refuses_the_workers_result(store: JobStore) -> None:
    job = _job(store)
    store.claim(job.id, "w")
    assert store.cancel(job.id) is True
    assert store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1) is False
    assert store.get(job.id).status == JobStatus.CANCELED.value


def test_a_queued_job_can_fail_before_it_ever_runs(store: JobStore) -> None:
    job = _job(store)
    assert store.fail(job.id, "queue_unavailable", "broker down")
    assert store.get(job.id).status == "failed"


def test_transitions_on_a_missing_job_report_false(store: JobStore) -> None:
    assert store.claim(new_id(), "w") is None
    assert store.fail(new_id(), "x", "y") is False


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_claimers_on_separate_connections_win_exactly_once(database_url: str) -> None:
    n = 8
    engine = make_engine(database_url)
    # one store per claimer, each with its own connection pool: no shared Python-side state at all
    stores = [JobStore(make_session_factory(make_engine(database_url))) for _ in range(n)]
    try:
        for _round in range(5):
            job = JobStore(make_session_factory(engine)).create(model="m", input={"prompt": "hi"}, params=PARAMS)
            barrier = threading.Barrier(n)
            wins: list[bool] = [False] * n

            def claim(i: int, barrier: threading.Barrier, wins: list[bool], job_id: str) -> None:
                barrier.wait()
                wins[i] = stores[i].claim(job_id, f"w{i}") is not None

            threads = [threading.Thread(target=claim, args=(i, barrier, wins, job.id)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sum(wins) == 1
            assert stores[0].get(job.id).attempts == 1
    finally:
        engine.dispose()
