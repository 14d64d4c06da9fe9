"""The job store and state machine: every status change is one compare-and-set UPDATE.

    queued → running → succeeded | failed | canceled
    queued → canceled
    queued → failed        (the job could not be published to the broker)
    queued → expired       (its queue time-to-live ran out before any worker started it)
    running → running      (a claim taking over a job whose worker's lease expired: attempts + 1)
    failed | canceled | expired → queued   (an operator's retry: a new attempt of the same job, its
                                            history kept in the event log)

A queued job of a paused model (`paused_queues`) is not claimed: it stays queued, in its place.

A running job is held under a lease (`lease_expires_at`) that its worker renews; each claim is numbered by
`attempts`, and a worker stores its outcome only while the job is still running under its own attempt, so a
worker whose lease was taken over cannot overwrite the job (see genq/lifecycle.py and workers/lease_keeper.py).

`transition` is the only code that writes `status`. It runs
`UPDATE jobs SET … WHERE id = :id AND status IN (:allowed)` and reports whether it changed the row:
two workers handed the same message, or a worker and a cancel, race on the database, and exactly one wins.
The winning transaction also appends the status to the job's event log and creates the webhook deliveries
the change fires (genq.store.transition_effects), so neither is lost if the process dies right after.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.ids import is_id, new_id
from genq.lifecycle import Schedule
from genq.status import JobStatus
from genq.store.bare_connections import BareConnections
from genq.store.hot_insert import HotInsert
from genq.store.hot_reads import HotReads
from genq.store.job_events import status_event
from genq.store.quotas import Reservation, reserve
from genq.store.schema import Base, Job, PausedQueue, utcnow
from genq.store.transition_effects import record_transition

# For each target status, the statuses it may be entered from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),  # running only with an expired lease
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELED: JobStatus.CANCELABLE,
    JobStatus.EXPIRED: frozenset({JobStatus.QUEUED}),
    JobStatus.QUEUED: frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED}),  # retry
}
RETRYABLE = ALLOWED_FROM[JobStatus.QUEUED]

ERROR_MESSAGE_LIMIT = 4000  # characters kept of an error message (tracebacks are logged, not stored)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a running job: the attempt number is its token for every later write."""

    job_id: str
    attempt: int
    lease_expires_at: datetime


class JobStore:
    """Jobs in the database. Methods open and commit their own short transactions; they are thread-safe."""

    def __init__(
        self, sessions: sessionmaker[Session], on_deliveries: Callable[[list[str]], None] | None = None,
        reads: sessionmaker[Session] | None = None, bare: BareConnections | None = None,
        wait: Callable[[], AbstractContextManager[None]] = nullcontext,
    ):
        """`on_deliveries` is called after a transition committed with the ids of the webhook deliveries it
        created (it publishes them; left unpublished, the sweep finds them). `reads`: sessions for
        single-statement reads (the API's autocommit engine, genq.store.db); by default `sessions`. `bare`:
        bare connections for `get` and `create` (the API's, on PostgreSQL: genq.store.hot_reads, hot_insert);
        `wait`: entered while `create` waits for the commit of the group its job is in."""
        self._sessions = sessions
        self._reads = reads or sessions
        self._hot = HotReads(bare) if bare is not None else None
        self._hot_insert = HotInsert(bare, wait) if bare is not None else None
        self._on_deliveries = on_deliveries

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The session factory, for queries beyond these methods (listing, leases, the sweeper)."""
        return self._sessions

    @property
    def reads(self) -> sessionmaker[Session]:
        """Sessions for one-statement reads (a job, a queue position): no transaction around them."""
        return self._reads

    def create(self, *, also: Iterable[Base] = (), reservation: Reservation | None = None, **fields: Any) -> Job:
        """Insert a `queued` job (fields as `build`) and commit it; returns the stored row (detached, readable).

        `also`: rows committed in the same transaction (e.g. its idempotency key): if one of them cannot be
        inserted (sqlalchemy.exc.IntegrityError), neither is the job. `reservation`: what the job reserves of
        its key's quotas, last in that transaction, the rows written (QuotaExceeded: nothing is inserted).
        Without `also`, on bare connections where the store has them (genq.store.hot_insert: grouped with the
        submissions of other threads into one commit).
        """
        job = self.build(**fields)
        also = list(also)
        if self._hot_insert is not None and not also:
            self._hot_insert.create(job, status_event(job), reservation)
            return job
        with self._sessions.begin() as session:
            session.add(job)
            session.flush()  # the job row first: the others refer to it (no ORM relationship orders them)
            session.add(status_event(job))
            session.add_all(also)
            if reservation is not None:
                session.flush()
                reserve(session, reservation.quota, reservation.jobs, reservation.tokens)
        return job

    @staticmethod
    def build(
        *,
        model: str,
        input: Mapping[str, Any],
        params: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        schedule: Schedule | None = None,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        batch_id: str | None = None,
        custom_id: str | None = None,
        batch_line: int | None = None,
        owner: str | None = None,
        tokens_reserved: int | None = None,
    ) -> Job:
        """A new `queued` job row, not yet added to a session; its event log starts at seq 1 (`queued`)."""
        now = utcnow()
        schedule = schedule or Schedule()
        return Job(
            id=job_id or new_id(),
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
            priority=schedule.priority,
            max_attempts=schedule.max_attempts,
            expires_at=schedule.expires_at(now),
            deadline_seconds=schedule.deadline_seconds,
            published_at=now,  # published right after this commit (genq.submit)
            owner=owner,
            tokens_reserved=tokens_reserved,
        )

    def get(self, job_id: str) -> Job | None:
        """The job, or None if there is none (a malformed id is simply not found)."""
        if self._hot is not None:
            return self._hot.job(job_id)
        if not is_id(job_id):
            return None
        with self._reads() as session:
            return session.get(Job, job_id)

    def get_many(self, job_ids: Iterable[str]) -> list[Job]:
        """The jobs that exist among `job_ids`, in the order asked."""
        ids = [i for i in dict.fromkeys(job_ids) if is_id(i)]
        if not ids:
            return []
        with self._sessions() as session:
            found = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
        return [found[i] for i in ids if i in found]

    def transition(
        self, job_id: str, to: JobStatus, *, where: Iterable[ColumnElement[bool]] = (), **values: Any
    ) -> bool:
        """Move the job to `to` if its status allows it (and every `where` condition holds), setting `values`
        in the same UPDATE.

        Returns True if this call changed the row, False if the job is missing or another
        transition got there first. Values may be SQL expressions (e.g. `Job.attempts + 1`).
        """
        return self._transition(job_id, to, list(where), values) is not None

    def _transition(
        self, job_id: str, to: JobStatus, where: list[ColumnElement[bool]], values: dict[str, Any]
    ) -> int | None:
        """The one compare-and-set UPDATE; returns the row's `attempts` after it, or None if nothing changed."""
        if not is_id(job_id):  # names no job (and PostgreSQL refuses some such strings, e.g. with NUL)
            return None
        allowed = [s.value for s in ALLOWED_FROM[to]]
        now = utcnow()
        values = {"status": to.value, "updated_at": now, "event_seq": Job.event_seq + 1, **values}
        if to in JobStatus.TERMINAL:
            values.setdefault("completed_at", now)
        if to is not JobStatus.RUNNING:
            values.setdefault("lease_expires_at", None)  # a finished job is held by no one
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status.in_(allowed), *where)
            .values(**values)
            .returning(Job.attempts)
        )
        with self._sessions.begin() as session:
            attempts = session.execute(stmt, execution_options={"synchronize_session": False}).scalar_one_or_none()
            if attempts is None:
                return None
            deliveries = record_transition(session, job_id)
        if deliveries and self._on_deliveries is not None:
            self._on_deliveries(deliveries)
        return attempts

    def claim(self, job_id: str, worker_id: str, lease_seconds: float = 30.0) -> Claim | None:
        """Take the job to run it, counting the attempt; None if it is not this worker's to run.

        Takes a `queued` job whose time-to-live has not run out, or a `running` job whose worker was
        declared lost (`declared_lost`) if it has attempts left and no cancel was asked for. The job is then
        held until `lease_expires_at`, which the worker renews (workers/lease_keeper.py).
        """
        now = utcnow()
        lease_expires_at = now + timedelta(seconds=lease_seconds)
        takeable = or_(
            and_(Job.status == JobStatus.QUEUED.value, or_(Job.expires_at.is_(None), Job.expires_at > now),
                 ~queue_paused()),
            and_(
                declared_lost(now),
                Job.cancel_requested_at.is_(None),
                Job.attempts < Job.max_attempts,
            ),
        )
        attempt = self._transition(
            job_id,
            JobStatus.RUNNING,
            [takeable],
            {"attempts": Job.attempts + 1, "started_at": now, "worker_id": worker_id,
             "lease_expires_at": lease_expires_at},
        )
        return Claim(job_id, attempt, lease_expires_at) if attempt is not None else None

    def succeed(
        self,
        job_id: str,
        *,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        logprobs: list[dict[str, Any]] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """running → succeeded with the output; False if the job is no longer running (e.g. canceled), or,
        given `attempt`, no longer held under that attempt (its lease was taken over)."""
        return self.transition(
            job_id,
            JobStatus.SUCCEEDED,
            where=_held(attempt),
            output_text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            logprobs=logprobs,
        )

    def fail(
        self, job_id: str, code: str, message: str, *, attempt: int | None = None, **output: Any
    ) -> bool:
        """queued | running → failed with a machine-readable code and a human message.

        Given `attempt`, only while the job is running under that attempt. `output`: partial output kept on
        the job (text, finish_reason, prompt_tokens, completion_tokens, logprobs), e.g. past a deadline.
        """
        return self.transition(
            job_id,
            JobStatus.FAILED,
            where=_held(attempt),
            error_code=code[:64],
            error_message=message[:ERROR_MESSAGE_LIMIT],
            **_output_columns(output),
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
        attempt: int | None = None,
        where: Iterable[ColumnElement[bool]] = (),
    ) -> bool:
        """queued | running → canceled, keeping any partial output the engine returned.

        A running job's worker then finds its own succeed() refused. Given `attempt`, only while the job
        is running under that attempt.
        """
        output = _output_columns({
            "text": text,
            "finish_reason": finish_reason,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "logprobs": logprobs,
        })
        return self.transition(job_id, JobStatus.CANCELED, where=[*_held(attempt), *where], **output)

    def retry(self, job: Job) -> bool:
        """failed | canceled | expired → queued: the same job again, as a new attempt (the next claim counts
        it), its output and error cleared and its history kept in the event log; False if `job` is no longer
        in the state it was read in. Its queue time-to-live starts again and it gets at least one more
        attempt. The caller publishes it."""
        now = utcnow()
        expires_at = now + (job.expires_at - job.created_at) if job.expires_at is not None else None
        return self.transition(
            job.id, JobStatus.QUEUED, where=[Job.status == job.status, Job.attempts == job.attempts],
            output_text=None, finish_reason=None, prompt_tokens=None, completion_tokens=None, logprobs=None,
            error_code=None, error_message=None, started_at=None, completed_at=None, cancel_requested_at=None,
            expires_at=expires_at, published_at=now, max_attempts=max(job.max_attempts, job.attempts + 1),
            retries=Job.retries + 1,
        )

    def expire(self, job_id: str) -> bool:
        """queued → expired, if its time-to-live has run out."""
        now = utcnow()
        return self.transition(
            job_id, JobStatus.EXPIRED, where=[Job.expires_at <= now],
            error_code="expired", error_message="the job's ttl_seconds passed before a worker started it",
        )


def declared_lost(now: datetime) -> ColumnElement[bool]:
    """The job is running under a lease that expired, and a sweeper has since declared its worker lost by
    re-publishing it (`published_at` after the lease's end; genq/store/lost_leases.py says when it may).

    An expired lease alone is not enough: after a database outage every lease looks expired until the live
    workers renew theirs, and a duplicate message arriving then must not take a job from a worker that is
    about to store its result.
    """
    return and_(
        Job.status == JobStatus.RUNNING.value,
        Job.lease_expires_at < now,
        Job.published_at.is_not(None),
        Job.published_at > Job.lease_expires_at,
    )


def queue_paused() -> ColumnElement[bool]:
    """The job's model's queue is paused (an EXISTS on `paused_queues` by primary key)."""
    return exists().where(PausedQueue.model == Job.model)


def _held(attempt: int | None) -> list[ColumnElement[bool]]:
    """The condition that the job is still running under `attempt` (none if attempt is None)."""
    if attempt is None:
        return []
    return [Job.status == JobStatus.RUNNING.value, Job.attempts == attempt]


def _output_columns(output: Mapping[str, Any]) -> dict[str, Any]:
    names = {"text": "output_text", "finish_reason": "finish_reason", "prompt_tokens": "prompt_tokens",
             "completion_tokens": "completion_tokens", "logprobs": "logprobs"}
    unknown = set(output) - set(names)
    if unknown:
        raise TypeError(f"unknown output fields: {sorted(unknown)}")
    return {names[k]: v for k, v in output.items() if v is not None}
