"""`Prefer: wait=N` (RFC 7240) on `POST /v1/jobs`: answer with the finished job if it finishes within N
seconds (N at most MAX_WAIT_S), else with the queued or running job as usual.

The wait polls the database with short, separate reads (each returns its connection to the pool at once),
so a waiting request holds a server thread but no database connection.
"""
from __future__ import annotations

import re
import time

from api.active_requests import waiting
from api.errors import ApiError
from genq.status import JobStatus
from genq.store.jobs import JobStore
from genq.store.schema import Job

MAX_WAIT_S = 60
_FIRST_POLL_S, _MAX_POLL_S = 0.05, 0.5
_WAIT_RE = re.compile(r"^\s*wait\s*=\s*(.*?)\s*$", re.IGNORECASE)


def wait_preference(header: str | None) -> int | None:
    """The seconds `Prefer: wait=N` asks for, capped at MAX_WAIT_S; None if not asked. Other preferences are
    ignored; a wait that is not a non-negative integer is a 422 naming the header."""
    if not header:
        return None
    for preference in header.split(","):
        match = _WAIT_RE.match(preference.split(";", 1)[0])
        if match is None:
            continue
        value = match.group(1).strip('"')
        if not value.isdigit() or len(value) > 6:
            raise ApiError(422, "invalid_value", "wait must be a whole number of seconds, e.g. Prefer: wait=10",
                           "Prefer")
        return min(int(value), MAX_WAIT_S)
    return None


def wait_until_finished(store: JobStore, job: Job, seconds: float) -> Job:
    """The job once finished, or as it is after `seconds` (polling, backing off from 50 ms to 0.5 s)."""
    deadline = time.monotonic() + seconds
    pause = _FIRST_POLL_S
    while job.status not in JobStatus.TERMINAL:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        with waiting():  # no turn of the gate held while asleep (api/active_requests.py)
            time.sleep(min(pause, left))
        pause = min(pause * 1.5, _MAX_POLL_S)
        job = store.get(job.id) or job
    return job


def is_finished(job: Job) -> bool:
    return job.status in JobStatus.TERMINAL
