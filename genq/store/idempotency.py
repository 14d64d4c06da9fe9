"""`Idempotency-Key` on `POST /v1/jobs`: a client that retries a submission gets the job it already made.

The key is stored in `idempotency_keys` (primary key: the key) in the same transaction as the job, with a
hash of the request body. The same key with the same body returns that job; with a different body it is
refused (IdempotencyKeyReused). Two requests racing with one key both try to insert it: the database's
uniqueness lets exactly one commit, and the other reads the winner's job.

Retention: a key is honoured for RETENTION (24 hours) after it was first used. After that it is forgotten
(the sweeper deletes old keys, and a request that finds one in its way deletes it) and may be reused for a
new job. Keys are global to the service (there are no accounts).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from genq.ids import new_id
from genq.store.jobs import JobStore
from genq.store.schema import IdempotencyKey, Job, utcnow
from genq.submit import QueueUnavailable

log = logging.getLogger(__name__)

RETENTION = timedelta(hours=24)
HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, no spaces: safe in logs and headers
_KEY_RE = re.compile(KEY_PATTERN)
_INSERT_TRIES = 3


class IdempotencyKeyInvalid(ValueError):
    """The header's value cannot be a key."""


class IdempotencyKeyReused(Exception):
    """The key was used, within its retention, for a request with a different body."""

    def __init__(self, key: str, job_id: str):
        super().__init__(f"the Idempotency-Key {key!r} was already used for a different request (job {job_id})")
        self.key = key
        self.job_id = job_id


def validate_key(value: str) -> str:
    """The key as given, if it is 1-255 visible ASCII characters; raises IdempotencyKeyInvalid."""
    if not _KEY_RE.match(value):
        raise IdempotencyKeyInvalid("must be 1 to 255 visible ASCII characters (no spaces)")
    return value


def request_hash(body: Any) -> str:
    """A hash of the request body as JSON, independent of key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_once(
    store: JobStore, key: str, body_hash: str, submit: Callable[[str, list[IdempotencyKey]], Job]
) -> tuple[Job, bool]:
    """The job for `key`: the one already made with it, or a new one from `submit(job_id, also)` (which must
    commit the `also` rows with the job, as genq.submit.submit_job does). Returns (job, created).

    Raises IdempotencyKeyReused if the key was used with another body, and whatever `submit` raises. If the
    new job could not be queued (QueueUnavailable) the key is released, so the client's retry can succeed.
    """
    for _ in range(_INSERT_TRIES):
        now = utcnow()
        found = _find(store, key, now)
        if found is not None:
            row, job = found
            if row.request_hash != body_hash:
                raise IdempotencyKeyReused(key, row.job_id)
            return job, False
        job_id = new_id()
        try:
            job = submit(job_id, [IdempotencyKey(key=key, job_id=job_id, request_hash=body_hash, created_at=now)])
        except IntegrityError:
            # another request committed this key first (read its job next time round), or an expired row of it
            # is in the way (delete it, then insert again)
            _delete_key_if_expired(store, key, now)
            continue
        except QueueUnavailable:
            _delete_key(store, key, job_id)
            raise
        return job, True
    raise RuntimeError(f"could not record Idempotency-Key {key!r} after {_INSERT_TRIES} tries")


def delete_expired_keys(store: JobStore, now: datetime | None = None) -> int:
    """Forget keys older than RETENTION (the sweeper calls this); returns how many were deleted."""
    cutoff = (now or utcnow()) - RETENTION
    with store.sessions.begin() as session:
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff),
                                 execution_options={"synchronize_session": False})
        return result.rowcount or 0


def _find(store: JobStore, key: str, now: datetime) -> tuple[IdempotencyKey, Job] | None:
    stmt = (
        select(IdempotencyKey, Job)
        .join(Job, Job.id == IdempotencyKey.job_id)
        .where(IdempotencyKey.key == key, IdempotencyKey.created_at >= now - RETENTION)
    )
    with store.sessions() as session:
        row = session.execute(stmt).first()
        return (row[0], row[1]) if row is not None else None


def _delete_key_if_expired(store: JobStore, key: str, now: datetime) -> None:
    with store.sessions.begin() as session:
        session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.key == key, IdempotencyKey.created_at < now - RETENTION),
            execution_options={"synchronize_session": False},
        )


def _delete_key(store: JobStore, key: str, job_id: str) -> None:
    try:
        with store.sessions.begin() as session:
            session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.key == key, IdempotencyKey.job_id == job_id),
                execution_options={"synchronize_session": False},
            )
    except Exception:  # the 503 the client gets matters more; the key then simply returns the failed job
        log.warning("could not release Idempotency-Key %r of job %s", key, job_id, exc_info=True)
