"""The one write path of jobs: record them, then publish their ids. One job or a batch, with or without an
`Idempotency-Key`, every submission goes through `submit_job` or `submit_batch`.

Jobs are committed before their messages exist, so a worker never receives an id it cannot read. The jobs
table is the outbox (genq/relay.py): if the broker refuses a message, the jobs it did not take stay `queued`
and are marked unpublished, the submission succeeds all the same, and the process's publish relay sends them
once the broker answers (while it still holds refused jobs, new ones are left to it directly rather than each
waiting out the broker's retries). A message lost later (e.g. in a broker flush) is re-published by the sweeper
(genq/sweeper.py).

With an idempotency key (genq.store.idempotency), the key's row is inserted in the job's transaction: the
same key and body return the job already made.

Given the submitting API key's `Quota` (genq.store.quotas), the jobs are its (`owner`), its quotas are
reserved in the jobs' transaction (QuotaExceeded: nothing is created), and its idempotency keys are its own.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from genq.broker import Publisher, PublishError
from genq.ids import new_id
from genq.lifecycle import Schedule
from genq.relay import PublishRelay, mark_unpublished
from genq.store import idempotency
from genq.store.batches import BatchStore
from genq.store.idempotency import IdempotencyKeyReused
from genq.store.jobs import JobStore
from genq.store.quotas import Quota, Reservation
from genq.store.schema import Job, utcnow

log = logging.getLogger(__name__)

_INSERT_TRIES = 3


@dataclass(frozen=True)
class NewJob:
    """A job as a client asked for it, validated (api.parsing makes it from a `POST /v1/jobs` body)."""

    model: str
    input: dict[str, Any]  # {"prompt": str} or {"messages": [{"role", "content"}, ...]}
    params: dict[str, Any]  # resolved GenerationParams.to_dict()
    metadata: dict[str, Any] | None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    schedule: Schedule = field(default_factory=Schedule)  # priority, ttl_seconds, deadline_seconds, max_attempts
    prompt_tokens: int | None = None  # as counted at submit (None: the model's tokenizer could not tell)

    @property
    def tokens_to_reserve(self) -> int:
        """The most tokens the job can use: its prompt's plus max_new_tokens (a daily quota reserves these)."""
        return (self.prompt_tokens or 0) + int(self.params.get("max_new_tokens") or 0)


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch file: its line number (1-based), its `custom_id` and the job it asks for."""

    line: int
    custom_id: str
    job: NewJob


def submit_job(
    store: JobStore,
    publisher: Publisher,
    new: NewJob,
    *,
    idempotency_key: str | None = None,
    body_hash: str = "",
    quota: Quota | None = None,
    relay: PublishRelay | None = None,
) -> tuple[Job, bool]:
    """Record `new` as a `queued` job and publish it; returns (job, created).

    Given `idempotency_key` (validated, with the request body's `body_hash`): the job made earlier with this key
    and body, if any (created False). Raises IdempotencyKeyReused if the key was used with another body.
    With `quota` (the submitting key's), raises QuotaExceeded when the job would pass it.
    A job the broker refused stays queued for `relay` (or, without one, the sweepers) to publish.
    """
    fields = _job_fields(new, quota)
    reservation = _reservation(quota, [new])
    if idempotency_key is None:
        job = store.create(**fields, reservation=reservation)
        _publish(store, publisher, [job], relay)
        return job, True
    stored_key = _scoped_key(idempotency_key, quota)
    for _ in range(_INSERT_TRIES):
        now = utcnow()
        found = idempotency.find(store, stored_key, now)
        if found is not None:
            row, job = found
            if row.request_hash != body_hash:
                raise IdempotencyKeyReused(idempotency_key, row.job_id)
            return job, False
        job_id = new_id()
        try:
            job = store.create(**fields, job_id=job_id, reservation=reservation,
                               also=[idempotency.key_row(stored_key, job_id, body_hash, now)])
        except IntegrityError:
            # another request committed this key first (read its job next time round), or an expired row of it
            # is in the way (delete it, then insert again)
            idempotency.delete_if_expired(store, stored_key, now)
            continue
        _publish(store, publisher, [job], relay)
        return job, True
    raise RuntimeError(f"could not record Idempotency-Key {idempotency_key!r} after {_INSERT_TRIES} tries")


def submit_batch(
    store: JobStore, publisher: Publisher, lines: Sequence[BatchLine], metadata: Mapping[str, Any] | None,
    *, batch_id: str | None = None, also: Sequence[object] = (), quota: Quota | None = None,
    relay: PublishRelay | None = None,
) -> str:
    """Record the batch and all its jobs in one transaction (every job or none), then publish them; returns the
    batch id (`batch_id` if given). `also`: more rows for that transaction (the OpenAI Batch API's record of the
    batch). Raises QuotaExceeded (nothing created) if the whole batch would pass `quota`. Jobs the broker refused
    stay queued for `relay` (or the sweepers) to publish."""
    batch_id = batch_id or new_id()
    jobs = [
        JobStore.build(**_job_fields(b.job, quota), batch_id=batch_id, custom_id=b.custom_id, batch_line=b.line)
        for b in lines
    ]
    BatchStore(store.sessions).create(batch_id, jobs, metadata, also, owner=quota.key_id if quota else None,
                                      reservation=_reservation(quota, [b.job for b in lines]))
    _publish(store, publisher, jobs, relay)
    return batch_id


def _job_fields(new: NewJob, quota: Quota | None) -> dict[str, Any]:
    return {"model": new.model, "input": new.input, "params": new.params, "metadata": new.metadata,
            "webhook": new.webhook, "webhook_events_filter": new.webhook_events_filter, "schedule": new.schedule,
            "owner": quota.key_id if quota else None,
            "tokens_reserved": new.tokens_to_reserve if quota and quota.counts_tokens else None}


def _reservation(quota: Quota | None, jobs: Sequence[NewJob]) -> Reservation | None:
    """What the jobs' transaction reserves of `quota` for them, last (None: nothing to count)."""
    if quota is None or not quota.limited:
        return None
    tokens = sum(j.tokens_to_reserve for j in jobs) if quota.counts_tokens else 0
    return Reservation(quota, len(jobs), tokens)


def _scoped_key(idempotency_key: str, quota: Quota | None) -> str:
    """The key as stored: a client's own namespace (its API key's id and the key's digest, which fits the
    column whatever the key's length), so two API keys' equal Idempotency-Keys never meet."""
    if quota is None:
        return idempotency_key
    return f"{quota.key_id}/{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def _publish(store: JobStore, publisher: Publisher, jobs: Sequence[Job], relay: PublishRelay | None) -> None:
    """Publish every committed job's id on its model's queue; from the first refusal on (or at once, while the
    relay still holds refused jobs), leave the rest queued and unpublished for the relay."""
    for i, job in enumerate(jobs):
        if relay is None or not relay.pending:
            try:
                publisher.publish(job.id, job.model, job.priority)
                continue
            except PublishError as e:
                log.warning("broker refused job %s (%s): left for the publish relay", job.id, e)
        mark_unpublished(store, [j.id for j in jobs[i:]])
        if relay is not None:
            relay.wake()
        return
