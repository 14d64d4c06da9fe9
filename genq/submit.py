"""Submitting a job: record it, then publish its id. The one place the API's write path lives."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from genq.broker import Publisher, PublishError
from genq.lifecycle import Schedule
from genq.store.jobs import JobStore
from genq.store.schema import Base, Job

QUEUE_UNAVAILABLE = "queue_unavailable"


class QueueUnavailable(RuntimeError):
    """The job was recorded but the broker refused it; the job has been marked failed."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(f"job {job_id} could not be queued ({reason}); it was marked failed")
        self.job_id = job_id


def submit_job(
    store: JobStore,
    publisher: Publisher,
    *,
    model: str,
    input: Mapping[str, Any],
    params: Mapping[str, Any],
    metadata: Mapping[str, Any] | None,
    webhook: str | None = None,
    webhook_events_filter: Sequence[str] | None = None,
    schedule: Schedule | None = None,
    job_id: str | None = None,
    also: Iterable[Base] = (),
) -> Job:
    """Insert the job as `queued` (committed), then publish its id on the model's queue.

    The row is committed before the message exists, so a worker never receives an id it cannot read.
    If publishing fails the job is marked `failed` with code `queue_unavailable` rather than left queued
    with no message: a client polling it sees why. (A message lost later, e.g. in a broker flush, is
    re-published by the sweeper: genq/sweeper.py.) `also`: rows committed with the job (JobStore.create).
    """
    job = store.create(
        model=model, input=input, params=params, metadata=metadata, schedule=schedule, job_id=job_id, also=also,
        webhook=webhook, webhook_events_filter=webhook_events_filter,
    )
    try:
        publisher.publish(job.id, model, job.priority)
    except PublishError as e:
        store.fail(job.id, QUEUE_UNAVAILABLE, f"the job could not be queued: {e}")
        raise QueueUnavailable(job.id, str(e)) from e
    return job
