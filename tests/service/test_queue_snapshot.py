"""Queue positions from a snapshot of the model's queue (genq/store/queue_snapshot.py): exact when fresh, at
most max_age old, this process's own submissions counted at once, a lower bound past POSITION_CAP; on
PostgreSQL and SQLite."""
from __future__ import annotations

import pytest

from genq.ids import new_id
from genq.store import queue_snapshot
from genq.store.jobs import JobStore
from genq.store.listing import queue_info_one
from genq.store.queue_snapshot import QueuePositions
from genq.store.schema import Job


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _queue(store: JobStore, model: str, priorities: list[int]) -> list[Job]:
    return [store.create(model=model, input={"prompt": "x"}, params={}, schedule=_schedule(p)) for p in priorities]


def _schedule(priority: int):  # type: ignore[no-untyped-def]
    from genq.lifecycle import Schedule

    return Schedule(priority=priority)


def test_fresh_positions_are_the_exact_counts(store: JobStore) -> None:
    model = f"snap-{new_id()[:8]}"
    jobs = _queue(store, model, [0, 3, 0, 9, 3, 0])
    positions = QueuePositions(store, max_age_s=1.0, clock=Clock())
    got = [positions.info(j) for j in jobs]
    want = [queue_info_one(store, j) for j in jobs]
    assert [g.position for g in got] == [w.position for w in want] == [3, 1, 4, 0, 2, 5]  # type: ignore[union-attr]
    assert not any(g.at_least or g.paused for g in got)  # type: ignore[union-attr]


def test_a_snapshot_is_read_again_once_older_than_max_age(store: JobStore) -> None:
    model = f"snap-{new_id()[:8]}"
    first, second, third = _queue(store, model, [0, 0, 0])
    clock = Clock()
    positions = QueuePositions(store, max_age_s=1.0, clock=clock)
    assert positions.info(third).position == 2  # type: ignore[union-attr]
    assert store.claim(first.id, "w") is not None  # taken by a worker: another process's change
    clock.now = 0.9
    assert positions.info(third).position == 2  # type: ignore[union-attr]  # within max_age: as of the snapshot
    clock.now = 1.1
    assert positions.info(third).position == 1  # type: ignore[union-attr]
    assert positions.info(store.get(first.id)) is None  # type: ignore[arg-type]  # running: no position


def test_this_process_s_new_jobs_count_at_once(store: JobStore) -> None:
    model = f"snap-{new_id()[:8]}"
    (old,) = _queue(store, model, [0])
    positions = QueuePositions(store, max_age_s=60.0, clock=Clock())
    assert positions.info(old).position == 0  # type: ignore[union-attr]
    urgent, later = _queue(store, model, [5, 0])
    positions.added([urgent, later])
    assert [positions.info(j).position for j in (urgent, old, later)] == [0, 1, 2]  # type: ignore[union-attr]


def test_past_the_cap_a_position_is_a_lower_bound(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_snapshot, "POSITION_CAP", 3)
    model = f"snap-{new_id()[:8]}"
    jobs = _queue(store, model, [0] * 5)
    positions = QueuePositions(store, max_age_s=60.0, clock=Clock())
    got = [positions.info(j) for j in jobs]
    assert [(g.position, g.at_least) for g in got] == [  # type: ignore[union-attr]
        (0, False), (1, False), (2, False), (3, True), (3, True)]
    newer = _queue(store, model, [9])
    positions.added(newer)  # ahead of all: the counted part moves, the last counted one drops out
    assert [(positions.info(j).position, positions.info(j).at_least) for j in (newer[0], jobs[0], jobs[2])] == [  # type: ignore[union-attr]
        (0, False), (1, False), (3, True)]


def test_max_age_zero_counts_every_time(store: JobStore) -> None:
    model = f"snap-{new_id()[:8]}"
    first, second = _queue(store, model, [0, 0])
    positions = QueuePositions(store, max_age_s=0, clock=Clock())
    assert positions.info(second).position == 1  # type: ignore[union-attr]
    store.claim(first.id, "w")
    assert positions.info(second).position == 0  # type: ignore[union-attr]


def test_a_stale_snapshot_is_read_again_by_one_thread_while_the_others_use_it(store: JobStore) -> None:
    """The reader of a stale snapshot blocks no one, and the jobs this process makes while it reads are in the
    snapshot it reads (counted at once, whether the read saw them or not)."""
    import threading

    model = f"snap-{new_id()[:8]}"
    (first,) = _queue(store, model, [0])
    clock = Clock()
    positions = QueuePositions(store, max_age_s=1.0, clock=clock)
    assert positions.info(first).position == 0  # type: ignore[union-attr]
    reading, release = threading.Event(), threading.Event()
    real_read = positions._read

    def slow_read(m: str):  # type: ignore[no-untyped-def]
        snap = real_read(m)
        reading.set()
        release.wait(10)
        return snap

    positions._read = slow_read  # type: ignore[method-assign]
    clock.now = 2.0
    (urgent,) = _queue(store, model, [9])
    reader = threading.Thread(target=positions.info, args=(first,))
    reader.start()
    assert reading.wait(10)
    positions.added([urgent])  # made while the read is under way (which has already seen it in the table)
    (late,) = _queue(store, model, [9])
    positions.added([late])  # made after the read's statement: not in what it read
    assert positions.info(first).position == 2  # type: ignore[union-attr]  # the old snapshot, not waiting
    release.set()
    reader.join(10)
    assert [positions.info(j).position for j in (urgent, late, first)] == [0, 1, 2]  # type: ignore[union-attr]


def test_a_forgotten_snapshot_is_read_again_at_once(store: JobStore) -> None:
    from genq.store.schema import PausedQueue

    model = f"snap-{new_id()[:8]}"
    (job,) = _queue(store, model, [0])
    positions = QueuePositions(store, max_age_s=60.0, clock=Clock())
    assert positions.info(job).paused is False  # type: ignore[union-attr]
    with store.sessions.begin() as session:
        session.add(PausedQueue(model=model, paused_by="test"))
    assert positions.info(job).paused is False  # type: ignore[union-attr]  # as of the snapshot
    positions.forget(model)
    assert positions.info(job).paused is True  # type: ignore[union-attr]
