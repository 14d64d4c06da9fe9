"""The job object as the API shows it and webhooks send it (here, not in api/, so workers can make it too)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from genq.lifecycle import QueueInfo
from genq.status import JobStatus
from genq.store.schema import Job

_PARTIAL_OUTPUT = (JobStatus.CANCELED.value, JobStatus.FAILED.value)  # canceled, or stopped at its deadline


def job_to_dict(job: Job, queue: QueueInfo | None = None) -> dict[str, Any]:
    """`output` is set once the job succeeded (or was canceled or failed with partial output); `error` once it
    failed. `queue`: the queued job's position and estimated wait (genq.store.listing.queue_info); without it both
    are null."""
    output: dict[str, Any] | None = None
    if job.status == JobStatus.SUCCEEDED.value or (job.status in _PARTIAL_OUTPUT and job.output_text):
        output = {
            "text": job.output_text,
            "finish_reason": job.finish_reason,
            "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens},
        }
        if job.logprobs is not None:
            output["logprobs"] = job.logprobs
    error = None
    if job.error_code is not None:
        error = {"code": job.error_code, "message": job.error_message}
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "model": job.model,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "completed_at": _iso(job.completed_at),
        "attempts": job.attempts,
        "input": job.input,
        "params": job.params,
        "output": output,
        "error": error,
        "metadata": job.client_metadata,
        "webhook": job.webhook,
        "webhook_events_filter": job.webhook_events_filter,
        "batch_id": job.batch_id,
        "custom_id": job.custom_id,
        **_lifecycle_fields(job, queue),
    }


def _lifecycle_fields(job: Job, queue: QueueInfo | None) -> dict[str, Any]:
    ttl = None
    if job.expires_at is not None:
        ttl = round((job.expires_at - job.created_at).total_seconds())
    return {
        "priority": job.priority,
        "ttl_seconds": ttl,
        "expires_at": _iso(job.expires_at),
        "deadline_seconds": job.deadline_seconds,
        "max_attempts": job.max_attempts,
        "cancel_requested_at": _iso(job.cancel_requested_at),
        "queue_position": queue.position if queue is not None else None,
        "estimated_wait_seconds": queue.estimated_wait_seconds if queue is not None else None,
        "queue_paused": queue.paused if queue is not None else False,
        "queue_position_at_least": queue.at_least if queue is not None else False,
    }


def iso(value: datetime | None) -> str | None:
    """A UTC timestamp as the API writes it (ISO 8601 with `Z`), or None."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


_iso = iso
