"""Queue positions read from a snapshot of each model's queue at most `max_age` old: what every submit and poll
shows, without counting the jobs ahead of each one (that count is PostgreSQL's largest cost of a poll: up to
POSITION_CAP index entries).

A model's snapshot is two statements: the delivery-order keys (priority, created_at, id) of its first
POSITION_CAP queued jobs, and its queue's paused flag and recent throughput (as genq.store.listing computes
them). A job's position is the number of keys before its own (a bisection): exact as of the snapshot, and
`at_least` POSITION_CAP past the last key of a full one. This process's own submissions go into its snapshots
as they are made, so a client sees its new job behind the ones it just made; jobs that workers took, or that
other processes submitted, show from the next refresh. `max_age` 0 takes no snapshot: every job gets the
bounded count of genq.store.listing.queue_info_one.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, select, union_all

from genq.lifecycle import PRIORITY_MAX, PRIORITY_MIN, QueueInfo
from genq.status import JobStatus
from genq.store.jobs import JobStore
from genq.store.listing import POSITION_CAP, WAIT_WINDOW, queue_info_of, queue_info_one, recent_finished, utc
from genq.store.schema import Job, PausedQueue, utcnow

Key = tuple[int, datetime, str]  # a queued job's place in delivery order: (-priority, created_at, id)


def key_of(job: Job) -> Key:
    return -job.priority, utc(job.created_at), job.id


@dataclass
class _Snapshot:
    taken: float  # the clock's time when it was read
    keys: list[Key]  # sorted, at most POSITION_CAP
    full: bool  # the queue held POSITION_CAP jobs or more: past the last key, a position is a lower bound
    paused: bool
    done: int  # the model's finished jobs in the window (at most RATE_SAMPLE) and the oldest one's end
    oldest: datetime | None


class QueuePositions:
    """Queue information of queued jobs, from snapshots at most `max_age_s` old (0: counted for each job).
    Thread-safe."""

    def __init__(self, store: JobStore, max_age_s: float, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._max_age = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshots: dict[str, _Snapshot] = {}
        self._reading: set[str] = set()  # models whose snapshot a thread is reading again
        self._pending: dict[str, list[Key]] = {}  # of those, keys of jobs this process made meanwhile

    def info(self, job: Job) -> QueueInfo | None:
        """Where `job` (as read) stands in its model's queue; None unless it is queued."""
        if job.status != JobStatus.QUEUED.value:
            return None
        if self._max_age <= 0:
            return queue_info_one(self._store, job)
        snap = self._fresh(job.model)
        position = bisect_left(snap.keys, key_of(job))
        at_least = snap.full and position >= len(snap.keys)
        return queue_info_of(min(position, POSITION_CAP), snap.done, snap.oldest, snap.paused, utcnow(), at_least)

    def added(self, jobs: Iterable[Job]) -> None:
        """Jobs this process just recorded as queued: counted in its snapshots from now on."""
        with self._lock:
            for job in jobs:
                key = key_of(job)
                if job.model in self._reading:
                    self._pending.setdefault(job.model, []).append(key)
                snap = self._snapshots.get(job.model)
                if snap is not None:
                    _insert(snap, key)

    def forget(self, model: str) -> None:
        """Drop the model's snapshot (its queue was paused, resumed or purged here): the next read takes one."""
        with self._lock:
            self._snapshots.pop(model, None)

    def _fresh(self, model: str) -> _Snapshot:
        """The model's snapshot; a stale one is read again by the first thread to find it stale while the
        others go on with it (only a model's first snapshot is waited for)."""
        with self._lock:
            snap = self._snapshots.get(model)
            if snap is not None and (self._clock() - snap.taken <= self._max_age or model in self._reading):
                return snap
            self._reading.add(model)
        fresh = None
        try:
            fresh = self._read(model)
        finally:
            with self._lock:
                self._reading.discard(model)
                pending = self._pending.pop(model, [])
                if fresh is not None:
                    for key in pending:  # made by this process while it was read: maybe not in it
                        _insert(fresh, key)
                    self._snapshots[model] = fresh
        return fresh

    def _read(self, model: str) -> _Snapshot:
        taken = self._clock()
        with self._store.reads() as session:
            keys = sorted((-p, utc(c), i) for p, c, i in session.execute(_KEYS, {"model": model}))[:POSITION_CAP]
            done, oldest, paused = session.execute(_RATE_AND_PAUSED, {
                "model": model, "since": utcnow() - WAIT_WINDOW}).one()
        return _Snapshot(taken, keys, len(keys) >= POSITION_CAP, bool(paused), done, oldest)


def _insert(snap: _Snapshot, key: Key) -> None:
    """Count a queued job's `key` in `snap` (once; past a full snapshot's last key it changes no position)."""
    i = bisect_left(snap.keys, key)
    if (i < len(snap.keys) and snap.keys[i] == key) or (snap.full and i == len(snap.keys)):
        return
    snap.keys.insert(i, key)
    if len(snap.keys) > POSITION_CAP:
        del snap.keys[POSITION_CAP:]
        snap.full = True


def _keys_statement() -> Any:
    """The first POSITION_CAP queued jobs of :model in each priority, oldest first: one index range each on
    (model, status, priority, created_at), so the cost stays bounded however long the queue."""
    model = bindparam("model", type_=Job.model.type)
    per_priority = [
        select(Job.priority, Job.created_at, Job.id)
        .where(Job.model == model, Job.status == JobStatus.QUEUED.value, Job.priority == p)
        .order_by(Job.created_at, Job.id).limit(POSITION_CAP)
        for p in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)
    ]
    return union_all(*(s.subquery().select() for s in per_priority))


def _rate_and_paused_statement() -> Any:
    model = bindparam("model", type_=Job.model.type)
    recent = recent_finished(model)
    return select(
        select(func.count()).select_from(recent).scalar_subquery(),
        select(func.min(recent.c.completed_at)).scalar_subquery(),
        exists().where(PausedQueue.model == model),
    )


_KEYS = _keys_statement()
_RATE_AND_PAUSED = _rate_and_paused_statement()
