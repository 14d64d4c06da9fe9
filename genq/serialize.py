"""The job object as the API shows it and webhooks send it (here, not in api/, so workers can make it too)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from genq.schema import Job, JobStatus


def job_to_dict(job: Job) -> dict[str, Any]:
    """`output` is set once the job succeeded (or was canceled with partial output); `error` once it failed."""
    output = None
    if job.status == JobStatus.SUCCEEDED.value or (job.status == JobStatus.CANCELED.value and job.output_text):
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
    }


def iso(value: datetime | None) -> str | None:
    """A UTC timestamp as the API writes it (ISO 8601 with `Z`), or None."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


_iso = iso
