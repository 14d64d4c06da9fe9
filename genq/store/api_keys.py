"""API keys: made, listed, revoked, and found from the value a client sends (`Authorization: Bearer <key>`).

A key's value is `genq_` and 32 random bytes (URL-safe base64): shown once, when it is made, and stored only as
its SHA-256. A key with that much entropy needs no slow password hash: nothing can be guessed from the digest,
and looking a key up stays one indexed read. A revoked key keeps its row (its jobs keep their owner) and is
refused from the next request on, by every API process, since every request reads the row.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from genq.ids import new_id
from genq.store.bare_connections import BareConnections
from genq.store.hot_reads import HotReads
from genq.store.schema import ApiKey, Job, utcnow

PREFIX = "genq_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_KEY_CHARS = 128  # ours are 48; anything longer names no key and is not hashed


_BY_HASH = select(ApiKey).where(ApiKey.key_hash == bindparam("key_hash"))  # built once: every request runs it


class KeyNameTaken(ValueError):
    pass


@dataclass(frozen=True)
class KeyInfo:
    """A key as the service uses it: who it is and its quotas (None: unlimited)."""

    id: str
    name: str
    max_concurrent: int | None
    tokens_per_day: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(row.id, row.name, row.max_concurrent, row.tokens_per_day, row.created_at, row.revoked_at)


def could_be_key(value: str) -> bool:
    """Whether `value` has a key's form (else it names no key, and is not hashed)."""
    return value.startswith(PREFIX) and len(value) <= MAX_KEY_CHARS


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, sessions: sessionmaker[Session], reads: sessionmaker[Session] | None = None,
                 bare: BareConnections | None = None):
        """`reads`: sessions for the one-statement lookup of every request (an autocommit engine's); `bare`: bare
        connections for it (the API's, on PostgreSQL: genq.store.hot_reads)."""
        self._sessions = sessions
        self._reads = reads or sessions
        self._hot = HotReads(bare) if bare is not None else None

    def create(self, name: str, max_concurrent: int | None = None, tokens_per_day: int | None = None
               ) -> tuple[KeyInfo, str]:
        """A new key named `name`; returns it and its value (the only time the value exists outside the client).
        Raises ValueError for a bad name or limit, KeyNameTaken if the name is in use (revoked keys included)."""
        if not NAME_RE.match(name):
            raise ValueError(f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        for label, limit in (("max_concurrent", max_concurrent), ("tokens_per_day", tokens_per_day)):
            if limit is not None and not 1 <= limit < 1 << 62:
                raise ValueError(f"{label} must be a positive integer")
        value = PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(id=new_id(), name=name, key_hash=digest(value), max_concurrent=max_concurrent,
                     tokens_per_day=tokens_per_day, created_at=utcnow())
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise KeyNameTaken(f"a key named {name!r} exists already") from None
        return KeyInfo.of(row), value

    def all(self) -> list[KeyInfo]:
        with self._sessions() as session:
            return [KeyInfo.of(r) for r in session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))]

    def revoke(self, name: str) -> bool:
        """Revoke the key named `name`; False if there is no such key or it was revoked already."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def find(self, value: str) -> KeyInfo | None:
        """The key whose value is `value` (revoked or not: see `revoked_at`), or None."""
        if not could_be_key(value):
            return None
        if self._hot is not None:
            found = self._hot.key(digest(value))
            return KeyInfo(**found) if found is not None else None
        with self._reads() as session:
            row = session.scalars(_BY_HASH, {"key_hash": digest(value)}).one_or_none()
            return KeyInfo.of(row) if row is not None else None

    def find_with_job(self, value: str, job_id: str) -> tuple[KeyInfo | None, Job | None] | None:
        """`find(value)` and the job `job_id` (whoever owns it, or None), read together in one round trip on
        the API's bare connections; None where there are none (SQLite): then `find` alone."""
        if self._hot is None:
            return None
        if not could_be_key(value):
            return None, None
        found, job = self._hot.key_and_job(digest(value), job_id)
        return (KeyInfo(**found) if found is not None else None), job
