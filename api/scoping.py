"""What a caller may see: with auth on, only its own API key's jobs and batches (and so their deliveries,
events and results); another key's answer 404, as if they did not exist. With auth off, everything."""
from __future__ import annotations

from api.auth import current_key_id, job_read_with_key
from api.errors import ApiError
from api.services import services
from genq.store.schema import Job


def visible(owner: str | None) -> bool:
    """Whether an object of `owner` is the caller's to see."""
    key = current_key_id()
    return key is None or owner == key


def owned_job(job_id: str) -> Job:
    """The job, if it exists and is the caller's; else 404 `job_not_found` (the same whether it exists or not)."""
    read, job = job_read_with_key(job_id)
    if not read:
        job = services().store.get(job_id)
    if job is None or not visible(job.owner):
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return job
