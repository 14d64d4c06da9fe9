"""The job event log: status changes by the state machine, text by the batching DeltaSink, one gap-free
sequence per job. Real PostgreSQL and SQLite."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from genq.store.db import make_engine, make_session_factory
from genq.store.delta_sink import DeltaSink
from genq.store.jobs import JobStore
from genq.store.schema import JobEvent
from models.engine.types import EngineEvent


@pytest.fixture
def sessions(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sink(sessions) -> Iterator[DeltaSink]:  # type: ignore[no-untyped-def]
    s = DeltaSink(sessions, interval=0.05)
    yield s
    s.stop()


def _events(sessions, job_id: str) -> list[tuple[int, str, dict]]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq))
        return [(e.seq, e.kind, e.data) for e in rows]


def _running_job(store: JobStore) -> str:
    job_id = store.create(model="m", input={"prompt": "hi"}, params={}).id
    assert store.claim(job_id, "w")
    return job_id


def test_every_status_change_is_logged_in_order(store: JobStore, sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = _running_job(store)
    store.succeed(job_id, text="ok", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    assert _events(sessions, job_id) == [
        (1, "status", {"status": "queued"}), (2, "status", {"status": "running", "attempt": 1}),
        (3, "status", {"status": "succeeded"}),
    ]


def test_a_refused_transition_logs_nothing(store: JobStore, sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = store.create(model="m", input={"prompt": "hi"}, params={}).id
    assert store.cancel(job_id)
    assert not store.claim(job_id, "w")
    assert [e[2]["status"] for e in _events(sessions, job_id)] == ["queued", "canceled"]


def test_text_is_batched_into_few_events_that_add_up_to_the_output(
    store: JobStore, sessions, sink: DeltaSink  # type: ignore[no-untyped-def]
) -> None:
    job_id = _running_job(store)
    pieces = [f"tok{i} " for i in range(200)]
    for piece in pieces:
        sink.listener(1)(EngineEvent("delta", job_id, text=piece))
    sink.listener(1)(EngineEvent("started", job_id))  # other engine events are not text
    sink.flush()
    store.succeed(job_id, text="".join(pieces), finish_reason="eos", prompt_tokens=1, completion_tokens=200)
    events = _events(sessions, job_id)
    deltas = [e for e in events if e[1] == "delta"]
    assert "".join(d[2]["text"] for d in deltas) == "".join(pieces)
    assert 1 <= len(deltas) < 20 and sink.writes < 20  # not one transaction per token
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert events[-1][2] == {"status": "succeeded"}  # after every piece of text


def test_one_flush_writes_every_running_jobs_text_in_one_transaction(
    store: JobStore, sessions  # type: ignore[no-untyped-def]
) -> None:
    sink = DeltaSink(sessions, interval=3600)  # no background writes: only the flush below
    jobs = [_running_job(store) for _ in range(3)]
    for job_id in jobs:
        sink.add(job_id, 1, f"text of {job_id}")
    assert sink.flush() == 3 and sink.writes == 1
    for job_id in jobs:
        assert _events(sessions, job_id)[-1] == (3, "delta", {"text": f"text of {job_id}"})
    sink.stop()


def test_text_for_a_job_that_is_no_longer_running_is_dropped(
    store: JobStore, sessions, sink: DeltaSink  # type: ignore[no-untyped-def]
) -> None:
    job_id = _running_job(store)
    assert store.cancel(job_id)
    sink.add(job_id, 1, "late text")
    sink.flush()
    assert [e[1] for e in _events(sessions, job_id)] == ["status", "status", "status"]


def test_concurrent_text_and_status_writers_never_share_or_skip_a_number(
    store: JobStore, sessions  # type: ignore[no-untyped-def]
) -> None:
    sink = DeltaSink(sessions, interval=0.001)
    job_id = _running_job(store)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            sink.add(job_id, 1, "x")

    producer = threading.Thread(target=produce)
    producer.start()
    threading.Event().wait(0.3)
    store.cancel(job_id)  # the status writer, racing the sink's background writes
    stop.set()
    producer.join()
    sink.stop()
    events = _events(sessions, job_id)
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert events[-1][2] == {"status": "canceled"}  # no text after the final status


def _take_over(store: JobStore) -> str:
    """A job whose first attempt's lease ran out at once and which a second claim took over."""
    job_id = store.create(model="m", input={"prompt": "hi"}, params={}).id
    assert store.claim(job_id, "w1", lease_seconds=-1).attempt == 1  # expired as soon as taken
    assert store.claim(job_id, "w2").attempt == 2
    return job_id


def test_a_takeover_logs_a_running_event_with_its_attempt(store: JobStore, sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = _take_over(store)
    assert _events(sessions, job_id) == [
        (1, "status", {"status": "queued"}), (2, "status", {"status": "running", "attempt": 1}),
        (3, "status", {"status": "running", "attempt": 2}),
    ]


def test_late_text_of_an_attempt_that_was_taken_over_is_dropped(
    store: JobStore, sessions, sink: DeltaSink  # type: ignore[no-untyped-def]
) -> None:
    job_id = _take_over(store)
    sink.add(job_id, 1, "old attempt's text")  # its worker was frozen, and resumed after the takeover
    sink.add(job_id, 2, "new attempt's text")
    sink.flush()
    sink.add(job_id, 1, "more of the old")
    sink.flush()
    assert _events(sessions, job_id)[2:] == [
        (3, "status", {"status": "running", "attempt": 2}), (4, "delta", {"text": "new attempt's text"}),
    ]
