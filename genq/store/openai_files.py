"""Files of the OpenAI-compatible Batch API: a batch's input, uploaded whole and kept as bytes.

Output and error files are not stored: they are read from the batch's jobs when asked for (api/openai/files.py),
so they always agree with the jobs and cost nothing until downloaded. `owner` is the uploading key's id (None
where the service runs without API keys); every read takes the caller's owner and sees only its own files.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from genq.store.schema import OpenAIFile, utcnow

FILE_PREFIX = "file-"


@dataclass(frozen=True)
class FileInfo:
    """A stored file without its content."""

    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime


def new_file_id() -> str:
    return FILE_PREFIX + uuid.uuid4().hex


def _info(row: OpenAIFile) -> FileInfo:
    return FileInfo(row.id, row.purpose, row.filename, row.size, row.created_at)


def _visible(owner: str | None) -> list[Any]:
    """The rows `owner` may see: its own (all of them where keys are off)."""
    return [] if owner is None else [OpenAIFile.owner == owner]


class FileStore:
    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def create(self, purpose: str, filename: str, content: bytes, owner: str | None) -> FileInfo:
        row = OpenAIFile(id=new_file_id(), purpose=purpose, filename=filename, size=len(content), content=content,
                         owner=owner, created_at=utcnow())
        with self._sessions.begin() as session:
            session.add(row)
            info = _info(row)
        return info

    def get(self, file_id: str, owner: str | None) -> FileInfo | None:
        if not _is_file_id(file_id):
            return None
        with self._sessions() as session:
            row = session.scalars(select(OpenAIFile).where(OpenAIFile.id == file_id, *_visible(owner))).first()
            return _info(row) if row is not None else None

    def content(self, file_id: str, owner: str | None) -> bytes | None:
        if not _is_file_id(file_id):
            return None
        with self._sessions() as session:
            return session.scalars(
                select(OpenAIFile.content).where(OpenAIFile.id == file_id, *_visible(owner))
            ).first()

    def list(self, owner: str | None, limit: int, purpose: str | None = None,
             after: str | None = None) -> list[FileInfo]:
        """Newest first; `after`: the id of the last file of the previous page."""
        where = [*_visible(owner), *([OpenAIFile.purpose == purpose] if purpose else [])]
        if after is not None:
            cursor = self.get(after, owner)
            if cursor is None:
                return []
            where.append((OpenAIFile.created_at < cursor.created_at)
                         | ((OpenAIFile.created_at == cursor.created_at) & (OpenAIFile.id > after)))
        with self._sessions() as session:
            rows = session.scalars(select(OpenAIFile).where(*where)
                                   .order_by(OpenAIFile.created_at.desc(), OpenAIFile.id).limit(limit))
            return [_info(r) for r in rows]

    def delete(self, file_id: str, owner: str | None) -> bool:
        if not _is_file_id(file_id):
            return False
        with self._sessions.begin() as session:
            result = session.execute(delete(OpenAIFile).where(OpenAIFile.id == file_id, *_visible(owner)))
            return bool(result.rowcount)  # type: ignore[attr-defined]


def _is_file_id(value: str) -> bool:
    if not value.startswith(FILE_PREFIX) or len(value) != len(FILE_PREFIX) + 32:
        return False
    try:
        return uuid.UUID(hex=value[len(FILE_PREFIX):]).hex == value[len(FILE_PREFIX):]
    except ValueError:
        return False
