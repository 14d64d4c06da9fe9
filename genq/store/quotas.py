"""Per-key quotas, held in the database so that every API process enforces the same ones.

- `max_concurrent`: unfinished (queued or running) jobs of the key at once.
- `tokens_per_day`: prompt + completion tokens per UTC day. A job reserves its prompt's tokens plus its
  `max_new_tokens` when it is submitted (the most it can use), on the day it is submitted; when it ends, the
  reservation is settled to what it used (`prompt_tokens + completion_tokens`; a job that never ran used
  none). So a key can never go past its quota, and what a finished job did not use is free again at once.

`reserve` runs last in the transaction that inserts the jobs (JobStore.create / BatchStore.create call it
once the rows are written): it locks the key's row (an UPDATE of it, which takes PostgreSQL's row lock and
SQLite's write lock alike) until the commit, so concurrent submissions of one key, from any process, count one
after another, and the lock is held only for the checks and the commit (a profile of one key submitting
under load showed its submissions queued on this lock while it was taken first); a batch reserves for all
its jobs at once and is refused whole (the transaction rolls back). `settle` runs inside the transaction of
the job's final transition (genq.store.transition_effects), so it happens exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from genq.status import JobStatus
from genq.store.schema import ApiKey, ApiKeyUsage, Job, utcnow

CONCURRENT_RETRY_AFTER_S = 2  # a slot frees when one of the key's jobs ends: no knowing when, so a short hint
DAY_S = 24 * 3600


@dataclass(frozen=True)
class Quota:
    """What a key may use (None: unlimited)."""

    key_id: str
    max_concurrent: int | None
    tokens_per_day: int | None

    @property
    def counts_tokens(self) -> bool:
        return self.tokens_per_day is not None

    @property
    def limited(self) -> bool:
        return self.max_concurrent is not None or self.tokens_per_day is not None


class QuotaExceeded(Exception):
    """A submission would take the key past a quota. `limit` is "concurrent" or "tokens"; `remaining` what is
    left of it now, `reset_s` in how many seconds it is expected to be free again (Retry-After)."""

    def __init__(self, limit: str, quota: Quota, remaining: int, reset_s: int, message: str):
        super().__init__(message)
        self.limit = limit
        self.quota = quota
        self.remaining = remaining
        self.reset_s = reset_s


def day_of(when: datetime) -> str:
    return when.date().isoformat()  # UTC: every stored time is


def reserve(session: Session, quota: Quota, jobs: int, tokens: int, now: datetime | None = None) -> None:
    """Count `jobs` new unfinished jobs (already written in `session`'s transaction) and `tokens` more tokens
    today against `quota`; raises QuotaExceeded, leaving the transaction to roll back."""
    if not quota.limited:
        return
    now = now or utcnow()
    # the key's row lock: held to the end of the transaction, it orders this key's submissions
    session.execute(update(ApiKey).where(ApiKey.id == quota.key_id).values(id=ApiKey.id),
                    execution_options={"synchronize_session": False})
    if quota.max_concurrent is not None:
        live = session.scalar(select(func.count()).select_from(Job).where(
            Job.owner == quota.key_id, Job.status.in_([s.value for s in JobStatus.LIVE]))) or 0
        if live > quota.max_concurrent:  # the new jobs are among them
            before = live - jobs
            what = "this job" if jobs == 1 else f"these {jobs} jobs"
            raise QuotaExceeded("concurrent", quota, max(0, quota.max_concurrent - before), CONCURRENT_RETRY_AFTER_S,
                                f"this key has {before} unfinished jobs; with {what} it would pass its limit of "
                                f"{quota.max_concurrent}")
    if quota.tokens_per_day is not None:
        day = day_of(now)
        used = session.scalar(select(ApiKeyUsage.tokens).where(ApiKeyUsage.key_id == quota.key_id,
                                                               ApiKeyUsage.day == day))
        if used is None:
            used = 0
            session.add(ApiKeyUsage(key_id=quota.key_id, day=day, tokens=0))
            session.flush()  # under the key's lock no one else inserts this row
        if used + tokens > quota.tokens_per_day:
            midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
            raise QuotaExceeded("tokens", quota, max(0, quota.tokens_per_day - used),
                                max(1, int((midnight - now).total_seconds())),
                                f"this key has {used} of its {quota.tokens_per_day} tokens for today in use or "
                                f"reserved; this submission reserves {tokens} (prompt + max_new_tokens)")
        session.execute(update(ApiKeyUsage).where(ApiKeyUsage.key_id == quota.key_id, ApiKeyUsage.day == day)
                        .values(tokens=ApiKeyUsage.tokens + tokens), execution_options={"synchronize_session": False})


def settle(session: Session, job: Job) -> None:
    """In the transaction of `job`'s final transition: its reservation becomes the tokens it used."""
    if job.owner is None or job.tokens_reserved is None or job.status not in JobStatus.TERMINAL:
        return
    used = (job.prompt_tokens or 0) + (job.completion_tokens or 0)
    session.execute(
        update(ApiKeyUsage).where(ApiKeyUsage.key_id == job.owner, ApiKeyUsage.day == day_of(job.created_at))
        .values(tokens=ApiKeyUsage.tokens - job.tokens_reserved + used),
        execution_options={"synchronize_session": False},
    )


def tokens_used(session: Session, key_id: str, day: str) -> int:
    """Tokens the key's jobs of `day` used or hold reserved."""
    return session.scalar(select(ApiKeyUsage.tokens).where(ApiKeyUsage.key_id == key_id,
                                                           ApiKeyUsage.day == day)) or 0
