"""Riding out a database outage: retry what must not be lost, and log an outage as one story, not a traceback
per poll.

`retry_while_unavailable(op, ...)` runs `op` again, with capped exponential backoff, for as long as it fails
because the database is unavailable (genq.store.db_errors.is_unavailable); any other error is raised at once.
`OutageLog` is what every background loop (lease keeper, text-event writer, sweepers) logs through: the first
failure, a reminder every `every_s` while it lasts, and the recovery with its length.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from genq.store.db_errors import is_unavailable

T = TypeVar("T")

FIRST_DELAY_S = 0.25
MAX_DELAY_S = 2.0  # a retry lands within this of the database coming back
REMIND_EVERY_S = 30.0


def describe(error: BaseException) -> str:
    """One line for the log: the driver's message without SQLAlchemy's background link."""
    orig = getattr(error, "orig", None) or error
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


class OutageLog:
    """The outage log of one loop or task: `failed(error)` on each failure, `recovered()` on each success."""

    def __init__(self, logger: logging.Logger, what: str, every_s: float = REMIND_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._what, self._every, self._clock = logger, what, every_s, clock
        self._since: float | None = None
        self._last = 0.0
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """Whether the last call was a failure."""
        return self._since is not None

    def failed(self, error: BaseException) -> None:
        with self._lock:
            now = self._clock()
            self._failures += 1
            if self._since is None:
                self._since = self._last = now
                self._log.warning("%s: the database is unavailable (%s); retrying", self._what, describe(error))
            elif now - self._last >= self._every:
                self._last = now
                self._log.warning("%s: the database is still unavailable after %.0fs, %d tries (%s)",
                                  self._what, now - self._since, self._failures, describe(error))

    def recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            self._log.info("%s: the database answered again after %.1fs", self._what, self._clock() - self._since)
            self._since, self._failures = None, 0


def retry_while_unavailable(
    op: Callable[[], T],
    outage: OutageLog,
    *,
    give_up_after: float | None = None,
    first_delay: float = FIRST_DELAY_S,
    max_delay: float = MAX_DELAY_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`op()`, run again for as long as it raises a database-unavailable error, waiting `first_delay`,
    doubling up to `max_delay` (±20% jitter, so many waiting threads do not retry in step).

    Other errors are raised at once. With `give_up_after` seconds, the unavailable error is raised once that
    much time has passed; without, it keeps trying for as long as the process lives.
    """
    started = time.monotonic()
    delay = first_delay
    while True:
        try:
            result = op()
        except Exception as e:
            if not is_unavailable(e):
                raise
            outage.failed(e)
            if give_up_after is not None and time.monotonic() - started + delay > give_up_after:
                raise
            sleep(delay * random.uniform(0.8, 1.2))
            delay = min(max_delay, delay * 2)
            continue
        outage.recovered()
        return result
