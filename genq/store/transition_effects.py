"""What a job's status change writes besides the job row, in the same transaction (called by JobStore).

The status event lets `GET /v1/jobs/{id}/events` stream the change; the webhook deliveries are the outbox
of the webhooks it fires; a final change or a retry counts in its key's quotas (genq.store.quotas). All commit
with the change or not at all.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from genq.store.job_events import status_event
from genq.store.quotas import on_transition
from genq.store.schema import Job
from genq.webhooks.outbox import create_deliveries


def record_transition(session: Session, job_id: str) -> list[str]:
    """After the UPDATE that changed the job's status (and counted the event in `event_seq`), in its
    transaction: append the status event and create the deliveries; returns the delivery ids."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:  # the UPDATE matched it in this transaction, so it exists; be safe anyway
        return []
    session.add(status_event(job))
    on_transition(session, job)
    return create_deliveries(session, job)
