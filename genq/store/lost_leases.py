"""When a running job's worker counts as lost: a sweeper has seen its lease expired, and not renewed, for
`confirm_s` seconds while the database answered.

An expired lease alone proves nothing during or just after a database outage: no worker could renew then, and
every live one renews within a poll once the database answers (workers/lease_keeper.py). The first sweep after an
outage sees all those leases expired; `confirm_s` later, the live workers' leases have moved on and only the
lost workers' are still the same. A sweep that fails forgets what it saw, since an outage in between voids
the observation. A sweeper declares a worker lost by settling its job or re-publishing it for a takeover
(genq/sweeper.py); a claim takes over only a job so declared (genq.store.jobs.JobStore.claim).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from genq.store.schema import Job

_Key = tuple[str, int, datetime]  # job id, attempt, the expired lease as seen


class LostLeases:
    """What one sweeper saw of expired leases, sweep after sweep."""

    def __init__(self, confirm_s: float):
        self.confirm = timedelta(seconds=confirm_s)
        self._first_seen: dict[_Key, datetime] = {}

    def confirmed(self, expired: Iterable[Job], now: datetime) -> list[Job]:
        """Of the running jobs seen with an expired lease now, those seen with the very same lease at least
        `confirm_s` ago. Leases no longer expired (renewed, or the job ended) are forgotten."""
        seen: dict[_Key, datetime] = {}
        out = []
        for job in expired:
            if job.lease_expires_at is None:
                continue
            key = (job.id, job.attempts, job.lease_expires_at)
            first = seen[key] = self._first_seen.get(key, now)
            if now - first >= self.confirm:
                out.append(job)
        self._first_seen = seen
        return out

    def forget(self) -> None:
        """Drop every observation (the database was unavailable: leases could not be renewed meanwhile)."""
        self._first_seen = {}
