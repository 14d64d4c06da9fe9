"""Per-key quotas, held in the database so that every API process enforces the same ones.

- `max_concurrent`: unfinished (queued or running) jobs of the key at once.
- `tokens_per_day`: prompt + completion tokens per UTC day. A job reserves its prompt's tokens plus its
  `max_new_tokens` when it is submitted (the most it can use), on the day it is submitted; when it ends, the
  reservation is settled to what it used (`prompt_tokens + completion_tokens`; a job that never ran used
  none). So a key can never go past its quota, and what a finished job did not use is free again at once.
  A job retried from the dashboard reserves its tokens again on its day (and settles them when it ends).

`reserve` runs last in the transaction that inserts the jobs (JobStore.create / BatchStore.create call it
once the rows are written). Neither limit counts jobs: the key's row keeps its number of unfinished jobs
(`live_jobs`, for a key with max_concurrent) and the day's row its tokens, and each is raised by one
conditional statement that fails past the limit. That statement locks its row (PostgreSQL's row lock,
SQLite's write lock) until the commit, so concurrent submissions of one key, from any process, count one
after another, and the lock is held only from the check to the commit (a profile of one key submitting under
load showed its submissions queued on this lock while it was taken first); a batch reserves for all its jobs
at once and is refused whole (the transaction rolls back). `on_transition` runs inside the transaction of
every status change (genq.store.transition_effects): a change is made once, so it counts once.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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


@dataclass(frozen=True)
class Reservation:
    """What a submission reserves of its key's quotas: `jobs` unfinished jobs and `tokens` tokens today."""

    quota: Quota
    jobs: int
    tokens: int


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
    today against `quota`; raises QuotaExceeded, leaving the transaction to roll back.

    Each limit is one conditional statement on one row, which raises the count only if it stays within the
    limit; the row stays locked to the commit, so concurrent submissions of one key, from any process, count
    one after another, whatever the number of the key's jobs."""
    if not quota.limited:
        return
    now = now or utcnow()
    if quota.max_concurrent is not None:
        raised = session.execute(_RAISE_LIVE, {"key_id": quota.key_id, "n": jobs}).scalar_one_or_none()
        if raised is None:
            before = session.scalar(select(ApiKey.live_jobs).where(ApiKey.id == quota.key_id)) or 0
            raise concurrent_exceeded(quota, before, jobs)
    if quota.tokens_per_day is not None:
        day = day_of(now)
        if tokens > quota.tokens_per_day or not _add_tokens(session, quota, day, tokens):
            raise tokens_exceeded(quota, tokens_used(session, quota.key_id, day), tokens, now)


def concurrent_exceeded(quota: Quota, before: int, jobs: int) -> QuotaExceeded:
    """The error of `jobs` more jobs refused: the key has `before` unfinished ones."""
    assert quota.max_concurrent is not None
    what = "this job" if jobs == 1 else f"these {jobs} jobs"
    return QuotaExceeded("concurrent", quota, max(0, quota.max_concurrent - before), CONCURRENT_RETRY_AFTER_S,
                         f"this key has {before} unfinished jobs; with {what} it would pass its limit of "
                         f"{quota.max_concurrent}")


def tokens_exceeded(quota: Quota, used: int, tokens: int, now: datetime) -> QuotaExceeded:
    """The error of `tokens` more tokens refused today: the key's jobs of today use or hold `used`."""
    assert quota.tokens_per_day is not None
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return QuotaExceeded("tokens", quota, max(0, quota.tokens_per_day - used),
                         max(1, int((midnight - now).total_seconds())),
                         f"this key has {used} of its {quota.tokens_per_day} tokens for today in use or "
                         f"reserved; this submission reserves {tokens} (prompt + max_new_tokens)")


def _add_tokens(session: Session, quota: Quota, day: str, tokens: int) -> bool:
    """Add `tokens` to the key's count of `day` if it stays within the daily limit (making the day's row if
    there is none yet), in one statement; whether they were added."""
    dialect = session.get_bind().dialect.name
    stmt = _ADD_TOKENS.get(dialect)
    if stmt is None:
        stmt = _ADD_TOKENS[dialect] = _add_tokens_statement(dialect)
    params = {"key_id": quota.key_id, "day": day, "tokens": tokens, "limit": quota.tokens_per_day}
    return session.execute(stmt, params).scalar_one_or_none() is not None


def _add_tokens_statement(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(ApiKeyUsage).values(key_id=bindparam("key_id"), day=bindparam("day"), tokens=bindparam("tokens"))
    return stmt.on_conflict_do_update(
        index_elements=[ApiKeyUsage.key_id, ApiKeyUsage.day],
        set_={"tokens": ApiKeyUsage.tokens + stmt.excluded.tokens},
        where=ApiKeyUsage.tokens + stmt.excluded.tokens <= bindparam("limit", type_=BigInteger()),
    ).returning(ApiKeyUsage.tokens)


# built once (building them was a third of a submission's Python time): raise a key's count of unfinished
# jobs by :n if it stays within its max_concurrent; add tokens to a day's count (per dialect: an upsert)
_RAISE_LIVE = (update(ApiKey)
               .where(ApiKey.id == bindparam("key_id"), ApiKey.live_jobs + bindparam("n") <= ApiKey.max_concurrent)
               .values(live_jobs=ApiKey.live_jobs + bindparam("n")).returning(ApiKey.live_jobs))
_ADD_TOKENS: dict[str, Any] = {}


def postgres_reservation_sql() -> tuple[str, str]:
    """The two reservation statements (raise the key's unfinished jobs by %(n)s; add %(tokens)s to the day's
    count within %(limit)s) as PostgreSQL text with psycopg's named parameters, for bare connections
    (genq/store/hot_insert.py): the same statements as `reserve`'s, written once."""
    from sqlalchemy.dialects.postgresql.psycopg import dialect

    pg = dialect()
    return str(_RAISE_LIVE.compile(dialect=pg)), str(_add_tokens_statement("postgresql").compile(dialect=pg))


def on_transition(session: Session, job: Job) -> None:
    """In the transaction of a status change of `job` (as it is after it), what its key's quotas count: a
    final change ends an unfinished job (the key's count goes down) and settles its reservation to the tokens
    it used; a retry (back to queued) counts it again and reserves its tokens again (an operator's action: no
    limit is checked). Running changes nothing. The key's row before the day's row, as `reserve` takes them,
    so the two cannot deadlock."""
    if job.owner is None:
        return
    if job.status in JobStatus.TERMINAL:
        live_delta, tokens_delta = -1, ((job.prompt_tokens or 0) + (job.completion_tokens or 0)
                                        - (job.tokens_reserved or 0))
    elif job.status == JobStatus.QUEUED.value:
        live_delta, tokens_delta = 1, job.tokens_reserved or 0
    else:
        return
    session.execute(update(ApiKey).where(ApiKey.id == job.owner, ApiKey.max_concurrent.is_not(None))
                    .values(live_jobs=ApiKey.live_jobs + live_delta), execution_options={"synchronize_session": False})
    if job.tokens_reserved is not None and tokens_delta:
        session.execute(
            update(ApiKeyUsage).where(ApiKeyUsage.key_id == job.owner, ApiKeyUsage.day == day_of(job.created_at))
            .values(tokens=ApiKeyUsage.tokens + tokens_delta), execution_options={"synchronize_session": False},
        )


def tokens_used(session: Session, key_id: str, day: str) -> int:
    """Tokens the key's jobs of `day` used or hold reserved."""
    return session.scalar(select(ApiKeyUsage.tokens).where(ApiKeyUsage.key_id == key_id,
                                                           ApiKeyUsage.day == day)) or 0
