"""`Idempotency-Key` on `POST /v1/jobs`: a client that retries a submission gets the job it already made.

The key is stored in `idempotency_keys` (primary key: the key) in the same transaction as the job, with a
hash of the request body; genq.submit.submit_job does that with the reads and writes here. The same key with
the same body returns that job; with a different body it is refused (IdempotencyKeyReused). Two requests
racing with one key both try to insert it: the database's uniqueness lets exactly one commit, and the other
reads the winner's job.

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
from typing import Any

from sqlalchemy import delete, select

from genq.store.db import rows_matched
from genq.store.jobs import JobStore
from genq.store.schema import IdempotencyKey, Job, utcnow

log = logging.getLogger(__name__)

RETENTION = timedelta(hours=24)
HEADER = "Idempotency-Key"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, no spaces: safe in logs and headers
_KEY_RE = re.compile(KEY_PATTERN)


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


def delete_expired_keys(store: JobStore, now: datetime | None = None) -> int:
    """Forget keys older than RETENTION (the sweeper calls this); returns how many were deleted."""
    cutoff = (now or utcnow()) - RETENTION
    with store.sessions.begin() as session:
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff),
                                 execution_options={"synchronize_session": False})
        return rows_matched(result) or 0


def key_row(key: str, job_id: str, body_hash: str, now: datetime) -> IdempotencyKey:
    """The row recording `key` for the new job `job_id`, to be inserted in the job's transaction."""
    return IdempotencyKey(key=key, job_id=job_id, request_hash=body_hash, created_at=now)


def find(store: JobStore, key: str, now: datetime) -> tuple[IdempotencyKey, Job] | None:
    """The key's row and its job, if the key was used within its retention."""
    stmt = (
        select(IdempotencyKey, Job)
        .join(Job, Job.id == IdempotencyKey.job_id)
        .where(IdempotencyKey.key == key, IdempotencyKey.created_at >= now - RETENTION)
    )
    with store.sessions() as session:
        row = session.execute(stmt).first()
        return (row[0], row[1]) if row is not None else None


def delete_if_expired(store: JobStore, key: str, now: datetime) -> None:
    """Delete the key's row if it is past its retention (it is in the way of a new job with this key)."""
    with store.sessions.begin() as session:
        session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.key == key, IdempotencyKey.created_at < now - RETENTION),
            execution_options={"synchronize_session": False},
        )

