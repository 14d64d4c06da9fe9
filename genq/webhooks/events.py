"""Which webhook events a job's status change fires, and what is sent for one.

A job chooses events with `webhook_events_filter`, a list of any of `started` and `completed`
(default `["completed"]`). `started` fires when the job starts running; `completed` fires when it
reaches any terminal status (succeeded, failed, canceled, expired — including a job canceled while queued).
The request body is the job object as JSON. The message id is derived from the job and the event,
so however often an event is fired (e.g. after a worker restart) and however many attempts its
delivery takes, the receiver sees one `webhook-id` for it and can deduplicate.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from genq.status import JobStatus
from genq.webhooks.errors import WebhookValidationError

FILTER_FIELD = "webhook_events_filter"

JOB_STARTED = "job.started"
JOB_COMPLETED = "job.completed"
# Filter name -> event type.
EVENTS: dict[str, str] = {"started": JOB_STARTED, "completed": JOB_COMPLETED}
DEFAULT_EVENTS_FILTER: tuple[str, ...] = ("completed",)

# The job state machine's statuses that fire events (see the README): `running` starts a job, a terminal
# status (JobStatus.TERMINAL) ends it.
STARTED_STATUS = JobStatus.RUNNING


def validate_events_filter(value: Any) -> tuple[str, ...]:
    """The client's `webhook_events_filter`, checked and in canonical order; None gives the default.

    Raises WebhookValidationError (field `webhook_events_filter`, code `webhook_events_filter_invalid`)
    unless it is a non-empty list of known event names. Duplicates are harmless and dropped.
    """
    if value is None:
        return DEFAULT_EVENTS_FILTER
    if not isinstance(value, (list, tuple)) or not value:
        raise _filter_error(f"must be a non-empty list of events, any of {sorted(EVENTS)}")
    for i, name in enumerate(value):
        if not isinstance(name, str) or name not in EVENTS:
            raise _filter_error(f"item {i} ({name!r}) is not an event; known events: {sorted(EVENTS)}")
    return tuple(name for name in EVENTS if name in value)


def events_for_status(new_status: str, events_filter: tuple[str, ...]) -> tuple[str, ...]:
    """Event types to send now that a job has moved to `new_status` (call once per successful
    transition). `events_filter` is the validated filter stored on the job."""
    if new_status == STARTED_STATUS and "started" in events_filter:
        return (JOB_STARTED,)
    if new_status in JobStatus.TERMINAL and "completed" in events_filter:
        return (JOB_COMPLETED,)
    return ()


def message_id(job_id: str, event: str, generation: int = 0) -> str:
    """The `webhook-id` of `event` for job `job_id`: the same for every attempt and every re-fire. A job retried
    after it ended (`generation` = its retries) fires its events again as new messages, which a receiver that
    drops repeated ids must not drop."""
    if event not in EVENTS.values():
        raise ValueError(f"unknown event {event!r}")
    if not job_id or not all(c.isascii() and (c.isalnum() or c in "-_") for c in job_id):
        raise ValueError(f"job id must be non-empty [A-Za-z0-9_-], got {job_id!r}")
    name = f"msg_{job_id}_{event.removeprefix('job.')}"
    return name if generation == 0 else f"{name}_r{generation}"


def event_body(job: Mapping[str, Any]) -> bytes:
    """The request body: the job object as compact UTF-8 JSON. These exact bytes are signed and sent."""
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _filter_error(message: str) -> WebhookValidationError:
    return WebhookValidationError(FILTER_FIELD, "webhook_events_filter_invalid", message)
