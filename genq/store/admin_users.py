"""Dashboard users: scrypt password hashes, roles, repeated-failure slow-down, and login sessions.

Users are not client API keys: they only log in to /admin. A password is stored as
`scrypt$N$r$p$salt$hash` (hashlib.scrypt, N=2^15, r=8, p=1: 32 MiB per check). After FAILURES_FREE failed
logins in a row a user is locked for 5 s, then 10, 20, ... (doubling at each further failure, at most
LOCK_MAX), whatever the password offered meanwhile; a success resets it. The lock lives in the database, so
every API process enforces the same one.

A session is a random token in an HttpOnly cookie; the database keeps only its sha256, with the session's
CSRF token and its expiry, so any API process can check it and logging out ends it everywhere.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from genq.store.schema import ADMIN_ROLES, AdminSession, AdminUser, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
FAILURES_FREE = 3
LOCK_FIRST = timedelta(seconds=5)
LOCK_MAX = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=12)
USERNAME_MAX = 64
PASSWORD_MIN = 8
_DUMMY = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="  # checked for unknown users: same time


class AdminUserError(ValueError):
    """A user name, password or role the dashboard does not accept; `field` names which."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AdminPrincipal:
    """Who a request acts as: the logged-in user and the session's CSRF token."""

    user_id: int
    username: str
    role: str
    csrf_token: str

    @property
    def can_act(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class LoginResult:
    principal: AdminPrincipal | None
    session_token: str | None = None
    locked_for_s: float = 0.0  # > 0: refused without checking, try again after this long


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 << 20,
                            dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 << 20, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def validate(username: str, password: str, role: str) -> None:
    if not username or len(username) > USERNAME_MAX or not username.isprintable() or username.strip() != username:
        raise AdminUserError("username", f"a user name is 1 to {USERNAME_MAX} printable characters, no outer spaces")
    if len(password) < PASSWORD_MIN:
        raise AdminUserError("password", f"a password has at least {PASSWORD_MIN} characters")
    if role not in ADMIN_ROLES:
        raise AdminUserError("role", f"the role is one of {', '.join(ADMIN_ROLES)}")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminUsers:
    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(AdminUser)) or 0)

    def put(self, username: str, password: str, role: str) -> bool:
        """Create the user, or set the password and role of the existing one; True if it was created."""
        validate(username, password, role)
        now = utcnow()
        hashed = hash_password(password)
        with self._sessions.begin() as session:
            user = session.scalar(select(AdminUser).where(AdminUser.username == username))
            if user is None:
                session.add(AdminUser(username=username, password_hash=hashed, role=role, created_at=now,
                                      updated_at=now))
                return True
            user.password_hash, user.role, user.updated_at = hashed, role, now
            user.failed_logins, user.locked_until = 0, None
            session.execute(delete(AdminSession).where(AdminSession.user_id == user.id))  # a new password logs out
            return False

    def login(self, username: str, password: str, now: datetime | None = None) -> LoginResult:
        now = now or utcnow()
        with self._sessions() as session:
            user = session.scalar(select(AdminUser).where(AdminUser.username == username[:USERNAME_MAX]))
        if user is None:
            verify_password(password, _DUMMY)  # as slow as a real check: no telling which names exist
            return LoginResult(None)
        if user.locked_until is not None and user.locked_until > now:
            return LoginResult(None, locked_for_s=(user.locked_until - now).total_seconds())
        ok = verify_password(password, user.password_hash)
        with self._sessions.begin() as session:
            row = session.get(AdminUser, user.id, with_for_update=True)
            if row is None:
                return LoginResult(None)
            if not ok:
                row.failed_logins += 1
                if row.failed_logins >= FAILURES_FREE:
                    lock = LOCK_FIRST * 2 ** (row.failed_logins - FAILURES_FREE)
                    row.locked_until = now + min(lock, LOCK_MAX)
                return LoginResult(None)
            row.failed_logins, row.locked_until = 0, None
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            session.execute(delete(AdminSession).where(AdminSession.expires_at < now))  # bounded tidy-up
            session.add(AdminSession(token_hash=_token_hash(token), user_id=row.id, csrf_token=csrf,
                                     created_at=now, expires_at=now + SESSION_LIFETIME))
            return LoginResult(AdminPrincipal(row.id, row.username, row.role, csrf), token)

    def principal(self, token: str | None) -> AdminPrincipal | None:
        """Who holds the session `token`, if it is a live one."""
        if not token or len(token) > 100:
            return None
        with self._sessions() as session:
            row = session.execute(
                select(AdminUser.id, AdminUser.username, AdminUser.role, AdminSession.csrf_token)
                .join(AdminSession, AdminSession.user_id == AdminUser.id)
                .where(AdminSession.token_hash == _token_hash(token), AdminSession.expires_at > utcnow())
            ).first()
        return AdminPrincipal(row.id, row.username, row.role, row.csrf_token) if row is not None else None

    def logout(self, token: str | None) -> None:
        if token:
            with self._sessions.begin() as session:
                session.execute(delete(AdminSession).where(AdminSession.token_hash == _token_hash(token)))
