"""The dashboard's audit log: every action, who took it, when, on what, from which address, and its result."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from genq.store.schema import AdminAudit, utcnow


def record(sessions: sessionmaker[Session], *, username: str, action: str, target: str, address: str | None,
           detail: dict[str, Any]) -> None:
    with sessions.begin() as session:
        session.add(AdminAudit(at=utcnow(), username=username, action=action, target=target[:2000],
                               address=(address or "")[:64] or None, detail=detail))


def page(sessions: sessionmaker[Session], limit: int, before_id: int | None = None,
         action: str | None = None) -> list[AdminAudit]:
    """Newest first; `before_id` is the cursor (the last id of the previous page)."""
    stmt = select(AdminAudit).order_by(AdminAudit.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AdminAudit.id < before_id)
    if action:
        stmt = stmt.where(AdminAudit.action == action)
    with sessions() as session:
        return list(session.scalars(stmt))
