"""Per-job scheduling a client asks for, and the lifecycle rules the store, workers and sweeper share.

A job may carry:
- `priority`: 0 (the default, lowest) to 9 (highest). Higher-priority jobs of a model are delivered to
  workers first (broker message priority on Redis) and are ahead of lower ones in `queue_position`.
  0..9 is the range the broker can order exactly (kombu's Redis transport keeps ten priority lists).
- `ttl_seconds`: how long the job may wait in the queue. A job no worker has started by then ends
  `expired` (at claim time, or by the sweeper), never runs.
- `deadline_seconds`: how long one attempt may run, counted from when a worker starts it. Past it the
  worker stops the generation and the job ends `failed` with code `deadline_exceeded`, keeping the text
  produced so far in its output. (The service-wide GENQ_JOB_TIMEOUT still applies on top.)
- `max_attempts`: how many times a job may be started (default 3). A worker lost mid-job costs one attempt;
  a job whose last attempt's worker was lost ends `failed` with code `attempts_exhausted`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

PRIORITY_MIN, PRIORITY_MAX = 0, 9
TTL_MAX_SECONDS = 7 * 24 * 3600
DEADLINE_MAX_SECONDS = 24 * 3600
MAX_ATTEMPTS_MAX = 10
DEFAULT_MAX_ATTEMPTS = 3
SCHEDULE_FIELDS = ("priority", "ttl_seconds", "deadline_seconds", "max_attempts")

# error codes stored on jobs the lifecycle ends
DEADLINE_EXCEEDED = "deadline_exceeded"
ATTEMPTS_EXHAUSTED = "attempts_exhausted"

# the longest a queued job waits between two re-publications by the sweeper (see genq/sweeper.py)
REPUBLISH_BACKOFF_CAP = timedelta(hours=1)


@dataclass(frozen=True)
class QueueInfo:
    """Where a queued job stands: computed by genq.store.listing.queue_info, shown on the job object."""

    position: int  # queued jobs of the same model ahead of this one
    estimated_wait_seconds: float | None
    paused: bool = False  # its model's queue is paused (genq.store.queues): it waits until resumed
    # `position` is a lower bound: at least that many are ahead (a poll counts no further: POSITION_CAP)
    at_least: bool = False


class ScheduleError(ValueError):
    """A scheduling field is out of range or of the wrong type; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Schedule:
    """The scheduling fields of one job, validated."""

    priority: int = 0
    ttl_seconds: int | None = None
    deadline_seconds: int | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        _check_int("priority", self.priority, PRIORITY_MIN, PRIORITY_MAX)
        _check_int("ttl_seconds", self.ttl_seconds, 1, TTL_MAX_SECONDS, optional=True)
        _check_int("deadline_seconds", self.deadline_seconds, 1, DEADLINE_MAX_SECONDS, optional=True)
        _check_int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS_MAX)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Schedule:
        """The schedule from a job body's top-level fields (absent or null: the default); raises ScheduleError."""
        given = {k: body[k] for k in SCHEDULE_FIELDS if body.get(k) is not None}
        return cls(**given)

    def expires_at(self, created_at: datetime) -> datetime | None:
        return created_at + timedelta(seconds=self.ttl_seconds) if self.ttl_seconds is not None else None


def broker_priority(priority: int) -> int:
    """The kombu message priority for a job priority: kombu's Redis transport delivers 0 first, so invert."""
    return PRIORITY_MAX - min(max(priority, PRIORITY_MIN), PRIORITY_MAX)


def republish_due(now: datetime, created_at: datetime, published_at: datetime | None, after_s: float) -> bool:
    """Whether a queued job's message should be presumed lost and sent again.

    The first re-publication comes `after_s` seconds after the last one; later ones wait as long as the
    job had already waited when it was last published (capped at an hour), so a long backlog costs a few
    duplicate messages per job (each one a no-op for the worker that gets it), not one per sweep.
    """
    if published_at is None:
        return True
    waited_before = min(max(published_at - created_at, timedelta(0)), REPUBLISH_BACKOFF_CAP)
    return now - published_at >= max(timedelta(seconds=after_s), waited_before)


def _check_int(field: str, value: Any, lo: int, hi: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleError(field, "must be an integer")
    if not lo <= value <= hi:
        raise ScheduleError(field, f"must be between {lo} and {hi}")
