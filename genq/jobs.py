"""The job store and state machine: every status change is one compare-and-set UPDATE.

    queued → running → succeeded | failed | canceled
    queued → canceled
    queued → failed        (the job could not be published to the broker)

`transition` is the only code that writes `status`. It runs
`UPDATE jobs SET … WHERE id = :id AND status IN (:allowed)` and reports whether it changed the row:
two workers handed the same message, or a worker and a cancel, race on the database, and exactly one wins.
The winning transaction also appends the status to the job's event log and creates the webhook deliveries
the change fires (genq.transition_effects), so neither is lost if the process dies right after.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.job_events import status_event
from genq.schema import Job, JobStatus, utcnow
from genq.transition_effects import record_transition

# For each target status, the statuses it may be entered from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}

ERROR_MESSAGE_LIMIT = 4000  # characters kept of an error message (tracebacks are logged, not stored)


def new_job_id() -> str:
    return str(uuid.uuid4())


def is_job_id(value: str) -> bool:
    """Whether `value` is a job id as this service makes them (canonical lowercase uuid)."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, TypeError, AttributeError):
        return False


class JobStore:
    """Jobs in the database. Methods open and commit their own short transactions; they are thread-safe."""

    def __init__(
        self, sessions: sessionmaker[Session], on_deliveries: Callable[[list[str]], None] | None = None
    ):
        """`on_deliveries` is called after a transition committed with the ids of the webhook deliveries it
        created (it publishes them; left unpublished, the sweep finds them)."""
        self._sessions = sessions
        self._on_deliveries = on_deliveries

    def create(self, **fields: Any) -> Job:
        """Insert a `queued` job (fields as `build`) and commit it; returns the stored row (detached, readable)."""
        job = self.build(**fields)
        with self._sessions.begin() as session:
            session.add(job)
            session.add(status_event(job))
        return job

    @staticmethod
    def build(
        *,
        model: str,
        input: Mapping[str, Any],
        params: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        batch_id: str | None = None,
        custom_id: str | None = None,
        batch_line: int | None = None,
    ) -> Job:
        """A new `queued` job row, not yet added to a session; its event log starts at seq 1 (`queued`)."""
        now = utcnow()
        return Job(
            id=job_id or new_job_id(),
            status=JobStatus.QUEUED.value,
            model=model,
            input=dict(input),
            params=dict(params),
            client_metadata=dict(metadata) if metadata is not None else None,
            attempts=0,
            created_at=now,
            updated_at=now,
            event_seq=1,
            webhook=webhook,
            webhook_events_filter=list(webhook_events_filter) if webhook_events_filter is not None else None,
            batch_id=batch_id,
            custom_id=custom_id,
            batch_line=batch_line,
        )

    def get(self, job_id: str) -> Job | None:
        """The job, or None if there is none (a malformed id is simply not found)."""
        if not is_job_id(job_id):
            return None
        with self._sessions() as session:
            return session.get(Job, job_id)

    def get_many(self, job_ids: Iterable[str]) -> list[Job]:
        """The jobs that exist among `job_ids`, in the order asked."""
        ids = [i for i in dict.fromkeys(job_ids) if is_job_id(i)]
        if not ids:
            return []
        with self._sessions() as session:
            found = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
        return [found[i] for i in ids if i in found]

    def transition(self, job_id: str, to: JobStatus, **values: Any) -> bool:
        """Move the job to `to` if its status allows it, setting `values` in the same UPDATE.

        Returns True if this call changed the row, False if the job is missing or another
        transition got there first. Values may be SQL expressions (e.g. `Job.attempts + 1`).
        """
        allowed = [s.value for s in ALLOWED_FROM[to]]
        now = utcnow()
        values = {"status": to.value, "updated_at": now, "event_seq": Job.event_seq + 1, **values}
        if to in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED):
            values.setdefault("completed_at", now)
        stmt = update(Job).where(Job.id == job_id, Job.status.in_(allowed)).values(**values)
        with self._sessions.begin() as session:
            result = session.execute(stmt, execution_options={"synchronize_session": False})
            if result.rowcount != 1:
                return False
            deliveries = record_transition(session, job_id)
        if deliveries and self._on_deliveries is not None:
            self._on_deliveries(deliveries)
        return True

    def claim(self, job_id: str, worker_id: str) -> bool:
        """queued → running, counting the attempt; False if the job is not queued (already claimed, done)."""
        return self.transition(
            job_id, JobStatus.RUNNING, attempts=Job.attempts + 1, started_at=utcnow(), worker_id=worker_id
        )

    def succeed(
        self,
        job_id: str,
        *,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> bool:
        """running → succeeded with the output; False if the job is no longer running (e.g. canceled)."""
        return self.transition(
            job_id,
            JobStatus.SUCCEEDED,
            output_text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            logprobs=logprobs,
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        """queued | running → failed with a machine-readable code and a human message."""
        return self.transition(
            job_id, JobStatus.FAILED, error_code=code[:64], error_message=message[:ERROR_MESSAGE_LIMIT]
        )

    def cancel(
        self,
        job_id: str,
        *,
        text: str | None = None,
        finish_reason: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> bool:
        """queued | running → canceled, keeping any partial output the engine returned.

        A running job's worker then finds its own succeed() refused.
        """
        output = {
            "output_text": text,
            "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "logprobs": logprobs,
        }
        return self.transition(job_id, JobStatus.CANCELED, **{k: v for k, v in output.items() if v is not None})
