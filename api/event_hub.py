"""One poller per API process for all its event streams: a stream waits on its own condition, not the database.

Every GENQ_EVENTS_POLL_MS (and at once when a stream subscribes), the poller thread reads the state of every
job that has subscribers in one query (`id, status, event_seq` by primary key: all an idle tick costs), then,
for the jobs whose log grew past what some subscriber has, their new events in one more query, and hands each
subscriber the events after its own cursor. A subscriber whose job is final and fully delivered ends with the
job row (for `done`); one whose job is gone ends without it. The poller holds a database connection only
during a tick, and a waiting stream holds none, so a thousand idle streams cost one cheap query per tick.

The thread runs while there are subscribers and exits when the last one leaves; the next subscribe starts it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from genq.status import JobStatus
from genq.store.job_events import read_events_of_jobs
from genq.store.schema import Job, JobEvent

log = logging.getLogger(__name__)

PER_JOB = 500  # events read per job per tick; a longer backlog is read on the next tick, at once
IDS_PER_QUERY = 500  # job ids in one IN (...) list


@dataclass
class Delivery:
    """What a subscriber gets from one wait: events in order, then perhaps the end of its stream."""

    events: list[JobEvent] = field(default_factory=list)
    ended: bool = False
    job: Job | None = None  # with `ended`: the final job, or None if it no longer exists


class Subscription:
    """One stream's place in the hub: its job, its cursor, and what the poller has handed it since its last wait."""

    def __init__(self, job_id: str, after: int):
        self.job_id = job_id
        self.after = after  # the last seq handed over; written by the poller only
        self._cond = threading.Condition()
        self._pending = Delivery()

    def wait(self, timeout: float) -> Delivery:
        """What arrived, waiting up to `timeout` seconds for something (an empty Delivery if nothing did)."""
        with self._cond:
            if not self._pending.events and not self._pending.ended:
                self._cond.wait(max(0.0, timeout))
            delivery, self._pending = self._pending, Delivery()
            if delivery.ended:
                self._pending.ended, self._pending.job = True, delivery.job  # it stays ended
            return delivery

    def _push(self, events: list[JobEvent], ended: bool, job: Job | None) -> None:
        if not events and not ended:
            return
        with self._cond:
            self._pending.events.extend(events)
            if ended:
                self._pending.ended, self._pending.job = True, job
            self._cond.notify_all()


class EventHub:
    """The API process's shared poller of the job event log (thread-safe)."""

    def __init__(self, sessions: sessionmaker[Session], poll_s: float):
        self._sessions = sessions
        self._poll_s = poll_s
        self._lock = threading.Lock()  # guards _subs and _thread
        self._subs: set[Subscription] = set()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self.ticks = 0  # polls made (for tests)

    def subscribe(self, job_id: str, after: int) -> Subscription:
        """Follow `job_id`'s log from after seq `after`; the first events come with the next tick, at once."""
        sub = Subscription(job_id, after)
        with self._lock:
            self._subs.add(sub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="genq-event-hub", daemon=True)
                self._thread.start()
        self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop following (idempotent)."""
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def _run(self) -> None:
        more = False
        while True:
            if not more:
                self._wake.wait(self._poll_s)
            self._wake.clear()
            with self._lock:
                subs = list(self._subs)
                if not subs:
                    self._thread = None
                    return
            try:
                more = self._tick(subs)
            except Exception:  # an outage: the streams wait, and the next tick tries again
                log.warning("reading the event log for %d streams failed", len(subs), exc_info=True)
                more = False
            self.ticks += 1

    def _tick(self, subs: list[Subscription]) -> bool:
        """One poll for `subs`; returns whether some job has more events to read right away."""
        cursors = [(sub, sub.after) for sub in subs]
        floor: dict[str, int] = {}  # per job, the lowest cursor: what the events query starts after
        for sub, after in cursors:
            floor[sub.job_id] = min(after, floor.get(sub.job_id, after))
        with self._sessions() as session:  # one connection, for this tick only
            states = _job_states(session, floor)
            behind = {job_id: after for job_id, after in floor.items()
                      if job_id in states and states[job_id][1] > after}
            events: dict[str, list[JobEvent]] = {}
            for event in read_events_of_jobs(session, behind, PER_JOB) if behind else []:
                events.setdefault(event.job_id, []).append(event)
            outcome = []
            for sub, after in cursors:
                new = [e for e in events.get(sub.job_id, ()) if e.seq > after]
                last = new[-1].seq if new else after
                state = states.get(sub.job_id)
                ended = state is None or (state[0] in JobStatus.TERMINAL and last >= state[1])
                outcome.append((sub, new, last, ended))
            final_ids = {sub.job_id for sub, _, _, ended in outcome if ended and sub.job_id in states}
            jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(final_ids)))} if final_ids else {}
        for sub, new, last, ended in outcome:
            sub.after = last
            sub._push(new, ended, jobs.get(sub.job_id))
            if ended:
                self.unsubscribe(sub)
        return any(len(evs) >= PER_JOB for evs in events.values())


def _job_states(session: Session, job_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """Status and event count of each of `job_ids` that exists."""
    ids = sorted(job_ids)
    states: dict[str, tuple[str, int]] = {}
    for i in range(0, len(ids), IDS_PER_QUERY):
        chunk = ids[i:i + IDS_PER_QUERY]
        for job_id, status, event_seq in session.execute(
            select(Job.id, Job.status, Job.event_seq).where(Job.id.in_(chunk))
        ):
            states[job_id] = (status, event_seq)
    return states
