"""Webhook signing secrets, stored in the database so every API and worker process signs alike.

Secrets are generations 1, 2, ...; the newest is current. Rotating adds a generation; the one it replaces
keeps signing (messages then carry two signatures) until the replacement is `grace_s` old, so a receiver can
switch to the new secret at its own pace without failing a message.

Each API key has its own secrets (`owner`: the key's id), made on its first use; the open API's (auth off, and
jobs submitted without a key) are owner ''. A delivery is signed with the secrets of its job's owner.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from genq.store.schema import WebhookSecret, utcnow
from genq.webhooks import generate_secret

DEFAULT_GRACE_S = 24 * 3600
_WINDOW = 16  # generations read at a time: more than can be inside any grace period in practice
OPEN = ""  # the owner of the open API's secrets


@dataclass(frozen=True)
class SecretInfo:
    generation: int
    secret: str
    created_at: datetime
    signs_until: datetime | None  # None for the current secret


class SecretStore:
    def __init__(self, sessions: sessionmaker[Session], grace_s: int = DEFAULT_GRACE_S):
        self._sessions = sessions
        self.grace = timedelta(seconds=grace_s)

    def current(self, owner: str | None = None) -> SecretInfo:
        """The current secret of `owner` (an API key's id; None: the open API's), made on first use."""
        return self.signing(owner=owner)[0]

    def signing(self, now: datetime | None = None, owner: str | None = None) -> list[SecretInfo]:
        """The secrets a message of `owner` is signed with now: the current one first, then those in grace."""
        now = now or utcnow()
        owner = owner or OPEN
        rows = self._latest(owner)
        if not rows:
            self._insert(owner, 1)
            rows = self._latest(owner)
        out = [SecretInfo(rows[0].id, rows[0].secret, rows[0].created_at, None)]
        for successor, row in pairwise(rows):
            until = successor.created_at + self.grace
            if until <= now:
                break
            out.append(SecretInfo(row.id, row.secret, row.created_at, until))
        return out

    def rotate(self, owner: str | None = None) -> SecretInfo:
        """Make a new current secret of `owner`; the previous one keeps signing for the grace period."""
        owner = owner or OPEN
        for _ in range(5):
            rows = self._latest(owner, 1)
            if self._insert(owner, rows[0].id + 1 if rows else 1):
                break
        return self.current(owner)

    def _latest(self, owner: str, n: int = _WINDOW) -> list[WebhookSecret]:
        with self._sessions() as session:
            return list(session.scalars(select(WebhookSecret).where(WebhookSecret.owner == owner)
                                        .order_by(WebhookSecret.id.desc()).limit(n)))

    def _insert(self, owner: str, generation: int) -> bool:
        """Add generation `generation`; False if another process added it first (then theirs stands)."""
        try:
            with self._sessions.begin() as session:
                session.add(WebhookSecret(owner=owner, id=generation, secret=generate_secret(), created_at=utcnow()))
        except IntegrityError:
            return False
        return True
