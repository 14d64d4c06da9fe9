"""Generated text into the event log, batched: one transaction every ~150 ms for all of a process's jobs.

The engine thread calls `add` for every piece of text (it only appends under a lock); a background thread
writes what has gathered, one coalesced `delta` event per job per flush. Writing a transaction per token
would put the database on the engine's critical path.

Before a worker stores a job's result it calls `flush()`, which writes everything pending before returning,
so a job's text events always precede its final status event.

Text is kept per claim (job id, attempt) and written only while the job is still running under that attempt:
the UPDATE that numbers the event locks the job row, as a takeover's claim does, so a late piece of an old
attempt (a worker frozen, then resumed) is either written before the new attempt's restart event or dropped.

While the database is unavailable the text waits in memory, in order, and goes out with the first write that
succeeds; the outage is logged once (genq.store.db_retry.OutageLog), not once per interval.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, insert, or_, update
from sqlalchemy.orm import Session, sessionmaker

from genq.status import JobStatus
from genq.store.db_errors import is_unavailable
from genq.store.db_retry import OutageLog
from genq.store.schema import Job, JobEvent, utcnow

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.15


class DeltaSink:
    """Buffers text per job and writes it to `job_events` every `interval` seconds (thread-safe)."""

    def __init__(self, sessions: sessionmaker[Session], interval: float = DEFAULT_INTERVAL_S):
        self._sessions = sessions
        self._interval = interval
        self._pending: dict[tuple[str, int], list[str]] = {}  # (job id, attempt) -> pieces
        self._lock = threading.Lock()  # guards _pending; held only to append or swap
        self._write_lock = threading.Lock()  # one write at a time, so a job's pieces stay in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = OutageLog(log, "text events")
        self.writes = 0  # transactions written (for tests and the log)

    def add(self, job_id: str, attempt: int, text: str) -> None:
        """Queue `text` generated for attempt `attempt` of `job_id` (called on the engine thread: must return
        at once)."""
        if not text:
            return
        with self._lock:
            self._pending.setdefault((job_id, attempt), []).append(text)
        if self._thread is None:
            self.start()

    def listener(self, attempt: int) -> Callable[[Any], None]:
        """An engine event listener (models.engine.types.EngineEvent) for one claim's request: keeps its
        `delta` events, as text of attempt `attempt`."""
        def on_event(event: Any) -> None:
            if event.kind == "delta":
                self.add(event.request_id, attempt, event.text)

        return on_event

    def start(self) -> None:
        """Start the background writer (idempotent; `add` starts it too)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="genq-delta-sink", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Write what is pending and stop the background writer."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)
        self.flush()

    def flush(self, raise_unavailable: bool = False) -> int:
        """Write every pending piece now; returns the number of events written.

        A failed write keeps the text for the next flush. `raise_unavailable`: if it failed because the database
        is unavailable, raise that error (a worker about to store a job's outcome waits for its text first).
        """
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                written = self._write(batch)
            except Exception as e:
                # keep the text for the next flush, ahead of anything that arrived meanwhile
                with self._lock:
                    for key, pieces in batch.items():
                        self._pending[key] = pieces + self._pending.get(key, [])
                if is_unavailable(e):
                    self._outage.failed(e)
                    if raise_unavailable:
                        raise
                else:
                    log.warning("writing %d jobs' text events failed; will retry", len(batch), exc_info=True)
                return 0
            self._outage.recovered()
            self.writes += 1
            return written

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def _write(self, batch: dict[tuple[str, int], list[str]]) -> int:
        """One UPDATE numbers every job's next event and one INSERT writes them: a statement per job made the
        writer hold the GIL about as long as the engine loop did (py-spy, 64 running jobs, float32 service)."""
        now = utcnow()
        held = or_(*(and_(Job.id == job_id, Job.attempts == attempt) for job_id, attempt in sorted(batch)))
        with self._sessions.begin() as session:
            # Only a job still running under the attempt that made the text takes it: after a cancel (or any
            # final status) its stream has ended, and after a takeover the text restarted. Jobs of one sink
            # are held by this worker alone, and other writers change one job per transaction, so locking
            # several rows here cannot deadlock.
            seqs = {(job_id, attempt): seq for job_id, attempt, seq in session.execute(
                update(Job)
                .where(Job.status == JobStatus.RUNNING.value, held)
                .values(event_seq=Job.event_seq + 1)
                .returning(Job.id, Job.attempts, Job.event_seq),
                execution_options={"synchronize_session": False},
            )}
            rows = [{"job_id": key[0], "seq": seqs[key], "kind": "delta",
                     "data": {"text": "".join(batch[key])}, "created_at": now}
                    for key in sorted(batch) if key in seqs]
            if rows:
                session.execute(insert(JobEvent), rows)
        return len(rows)
