"""When to try a webhook delivery again, and when to give up.

The default schedule is the Standard Webhooks one: after a failed first attempt, retry after 5 s,
5 min, 30 min, 2 h, 5 h, 10 h and 10 h (eight attempts over about 27.6 hours). Only failures that may
pass are retried: no response (timeout, connection error), 5xx, and 429. A receiver's `Retry-After`
(seconds or an HTTP date) is honoured as a lower bound on the wait, capped so a receiver cannot park
a delivery for days.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_MAX_RETRY_AFTER = 36000.0  # the schedule's longest wait


def is_retryable(status: int | None) -> bool:
    """Whether an attempt with this outcome may succeed later: no response (None), 429 or 5xx."""
    return status is None or status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if absent or bad.

    A date in the past means 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # RFC 9110: delta-seconds = 1*DIGIT
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Wait before retry N (1-based) is `schedule[N-1]`, scaled by a random factor in [1-jitter, 1+jitter].

    len(schedule) is the number of retries; an empty schedule never retries.
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.0
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, tuple) or not all(
            isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d >= 0
            for d in self.schedule
        ):
            raise ValueError(f"schedule must be a tuple of finite non-negative seconds, got {self.schedule!r}")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be a fraction in [0, 1], got {self.jitter!r}")
        if (
            isinstance(self.max_retry_after, bool)
            or not isinstance(self.max_retry_after, (int, float))
            or not 0 <= self.max_retry_after < math.inf
        ):
            raise ValueError(f"max_retry_after must be finite non-negative seconds, got {self.max_retry_after!r}")

    @classmethod
    def from_config(cls, schedule: str | None, jitter: float = 0.0) -> RetryPolicy:
        """Build from a comma-separated list of seconds ("5,300,1800"); None or "" means the default schedule."""
        if not schedule or not schedule.strip():
            return cls(DEFAULT_SCHEDULE, jitter)
        try:
            delays = tuple(float(part) for part in schedule.split(","))
        except ValueError:
            raise ValueError(f"webhook retry schedule must be comma-separated seconds, got {schedule!r}") from None
        return cls(delays, jitter)

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first one plus one per schedule entry."""
        return len(self.schedule) + 1

    def next_delay(
        self,
        attempt: int,
        response_status: int | None,
        retry_after_header: str | None = None,
        *,
        now: datetime | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt after attempt number `attempt` (1-based) ended with
        `response_status` (None: no response), or None to give up (success, final failure, out of retries).
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be a positive integer, got {attempt!r}")
        if not is_retryable(response_status) or attempt > len(self.schedule):
            return None
        delay = self.schedule[attempt - 1]
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0)
        retry_after = parse_retry_after(retry_after_header, now)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay
