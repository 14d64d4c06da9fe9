"""Webhook signing secrets, stored in the database so every API and worker process signs alike.

Secrets are generations 1, 2, ...; the newest is current. Rotating adds a generation; the one it replaces
keeps signing (messages then carry two signatures) until the replacement is `grace_s` old, so a receiver can
switch to the new secret at its own pace without failing a message.
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

    def current(self) -> SecretInfo:
        """The current secret, made on first use."""
        return self.signing()[0]

    def signing(self, now: datetime | None = None) -> list[SecretInfo]:
        """The secrets a message is signed with now: the current one first, then those still in grace."""
        now = now or utcnow()
        rows = self._latest()
        if not rows:
            self._insert(1)
            rows = self._latest()
        out = [SecretInfo(rows[0].id, rows[0].secret, rows[0].created_at, None)]
        for successor, row in pairwise(rows):
            until = successor.created_at + self.grace
            if until <= now:
                break
            out.append(SecretInfo(row.id, row.secret, row.created_at, until))
        return out

    def rotate(self) -> SecretInfo:
        """Make a new current secret; the previous one keeps signing for the grace period."""
        for _ in range(5):
            rows = self._latest(1)
            if self._insert(rows[0].id + 1 if rows else 1):
                break
        return self.current()

    def _latest(self, n: int = _WINDOW) -> list[WebhookSecret]:
        with self._sessions() as session:
            return list(session.scalars(select(WebhookSecret).order_by(WebhookSecret.id.desc()).limit(n)))

    def _insert(self, generation: int) -> bool:
        """Add generation `generation`; False if another process added it first (then theirs stands)."""
        try:
            with self._sessions.begin() as session:
                session.add(WebhookSecret(id=generation, secret=generate_secret(), created_at=utcnow()))
        except IntegrityError:
            return False
        return True
