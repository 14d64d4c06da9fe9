"""The jobs a worker process holds, and the one thread that keeps them: renews their leases and notices
cancel requests and lost claims.

Every task thread registers the job it claimed (`LeaseKeeper.hold`) and attaches the engine's request handle
once it has one. One keeper thread per process then, every `poll_interval` (0.2 s):
- reads the status, attempt and cancel request of every held job in one query, and stops the engine request
  of a job whose cancel was asked for (`cancel`) or that is no longer running under this claim (`lost`:
  canceled while its lease had lapsed, or taken over by another worker);
- every lease/3 seconds renews the lease of every held job in one transaction. A renewal that fails (the
  database is unavailable) is tried again every poll until one succeeds, so the leases are renewed within a
  poll of the database coming back: the sweeper declares a lease lost only after seeing it expired and
  unrenewed for a while (genq/sweeper.py), so a worker that outlived an outage keeps its jobs.
Stopping is `RequestHandle.cancel()`: the engine drops the sequence before its next step and returns the
text so far, which the task thread stores as the reason says. Only the database is involved, so this works
on any broker (Redis or the file-system one).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from genq.status import JobStatus
from genq.store.db_errors import is_unavailable
from genq.store.db_retry import OutageLog
from genq.store.jobs import Claim, JobStore
from genq.store.leases import held_states, renew_leases

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2

# why a held job's engine request was stopped
STOP_CANCEL = "cancel"
STOP_LOST = "lost"
STOP_DEADLINE = "deadline"


class HeldJob:
    """One claimed job in this process: its claim, its engine handle once submitted, and why it was stopped."""

    def __init__(self, claim: Claim):
        self.claim = claim
        self.started = time.monotonic()  # the attempt's start, for its deadline
        self.stop_reason: str | None = None
        self._handle: Any = None
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, int]:
        return self.claim.job_id, self.claim.attempt

    def attach(self, handle: Any) -> None:
        """The engine's handle for this job; canceled at once if the job was stopped before it existed."""
        with self._lock:
            self._handle = handle
            stopped = self.stop_reason is not None
        if stopped:
            handle.cancel()

    def stop(self, reason: str) -> None:
        """Stop the job's generation (once; the first reason is kept)."""
        with self._lock:
            if self.stop_reason is not None:
                return
            self.stop_reason = reason
            handle = self._handle
        log.info("job %s (attempt %d): stopping, %s", self.claim.job_id, self.claim.attempt, reason)
        if handle is not None:
            handle.cancel()


class LeaseKeeper:
    """The process's held jobs and the thread that keeps them (started on the first hold)."""

    def __init__(self, store: JobStore, lease_seconds: float, poll_interval: float = POLL_INTERVAL_S):
        self._store = store
        self._lease_seconds = lease_seconds
        self._renew_every = lease_seconds / 3
        self._poll_interval = poll_interval
        self._held: dict[tuple[str, int], HeldJob] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage = OutageLog(log, "lease keeper")

    def hold(self, claim: Claim) -> HeldJob:
        """Register a claimed job; its lease is renewed and its cancel requests watched until `release`."""
        held = HeldJob(claim)
        with self._lock:
            self._held[held.key] = held
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="genq-lease-keeper", daemon=True)
                self._thread.start()
        return held

    def release(self, held: HeldJob) -> None:
        with self._lock:
            self._held.pop(held.key, None)

    def held(self) -> list[HeldJob]:
        with self._lock:
            return list(self._held.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every held job to be released; whether none is left."""
        deadline = time.monotonic() + timeout
        while self.held():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return True

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        renewed = time.monotonic()  # the last successful renewal (jobs are claimed with a fresh lease)
        while not self._stop.wait(self._poll_interval):
            held = self.held()
            if not held:
                continue
            try:
                if time.monotonic() - renewed >= self._renew_every:
                    started = time.monotonic()
                    for key in renew_leases(self._store, [h.key for h in held], self._lease_seconds):
                        self._stop_key(key, STOP_LOST)
                    renewed = started
                self._check(held)
            except Exception as e:  # the leases run on; renewing is tried again next poll
                if is_unavailable(e):
                    self._outage.failed(e)
                else:
                    log.exception("lease keeper: checking held jobs failed")
                continue
            self._outage.recovered()

    def _check(self, held: list[HeldJob]) -> None:
        states = held_states(self._store, {h.claim.job_id for h in held})
        for h in held:
            state = states.get(h.claim.job_id)
            if state is None or state.status != JobStatus.RUNNING.value or state.attempts != h.claim.attempt:
                h.stop(STOP_LOST)
            elif state.cancel_requested:
                h.stop(STOP_CANCEL)

    def _stop_key(self, key: tuple[str, int], reason: str) -> None:
        with self._lock:
            held = self._held.get(key)
        if held is not None:
            held.stop(reason)
