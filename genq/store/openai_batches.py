"""The OpenAI Batch API's record of a genq batch (same id): its endpoint, input file, window and cancel request.

The batch itself, its jobs and their counts are genq's (genq/store/batches.py); this adds only what OpenAI's
batch object shows and genq's does not. Canceling asks every live job of the batch to stop (as
`POST /v1/jobs/{id}/cancel` does), after recording the request, so the batch reads `cancelling`, then `cancelled`.
"""
from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.ids import is_id
from genq.status import JobStatus
from genq.store.jobs import JobStore
from genq.store.leases import request_cancel
from genq.store.schema import Job, OpenAIBatch, utcnow


def _visible(owner: str | None) -> list[object]:
    return [] if owner is None else [OpenAIBatch.owner == owner]


class OpenAIBatchStore:
    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def get(self, batch_id: str, owner: str | None) -> OpenAIBatch | None:
        if not is_id(batch_id):
            return None
        with self._sessions() as session:
            return session.scalars(
                select(OpenAIBatch).where(OpenAIBatch.batch_id == batch_id, *_visible(owner))  # type: ignore[arg-type]
            ).first()

    def list(self, owner: str | None, limit: int, after: str | None = None) -> list[OpenAIBatch]:
        """Newest first; `after`: the id of the last batch of the previous page."""
        where = _visible(owner)
        with self._sessions() as session:
            if after is not None:
                cursor = self.get(after, owner)
                if cursor is None:
                    return []
                where.append((OpenAIBatch.created_at < cursor.created_at)
                             | ((OpenAIBatch.created_at == cursor.created_at) & (OpenAIBatch.batch_id > after)))
            return list(session.scalars(
                select(OpenAIBatch).where(*where)  # type: ignore[arg-type]
                .order_by(OpenAIBatch.created_at.desc(), OpenAIBatch.batch_id).limit(limit)
            ))

    def cancel(self, store: JobStore, batch_id: str) -> None:
        """Record the cancel request (once), then ask each of the batch's live jobs to stop."""
        with self._sessions.begin() as session:
            session.execute(update(OpenAIBatch)
                            .where(OpenAIBatch.batch_id == batch_id, OpenAIBatch.cancel_requested_at.is_(None))
                            .values(cancel_requested_at=utcnow()))
        with self._sessions() as session:
            live = list(session.scalars(select(Job.id).where(
                Job.batch_id == batch_id, Job.status.in_([s.value for s in JobStatus.LIVE]))))
        for job_id in live:
            request_cancel(store, job_id)
