"""The job object with what depends on other jobs: a queued job's position and estimated wait."""
from __future__ import annotations

from typing import Any

from api.services import services
from genq.serialize import job_to_dict
from genq.store.jobs import JobStore
from genq.store.listing import queue_info
from genq.store.schema import Job


def job_json(job: Job) -> dict[str, Any]:
    """One job as the API shows it (a queued one's position from its queue's snapshot: api.services)."""
    return job_to_dict(job, services().queue_positions.info(job))


def jobs_json(store: JobStore, jobs: list[Job]) -> list[dict[str, Any]]:
    """Jobs as the API shows them (queue positions computed for the queued ones)."""
    queue = queue_info(store, jobs)
    return [job_to_dict(job, queue.get(job.id)) for job in jobs]
