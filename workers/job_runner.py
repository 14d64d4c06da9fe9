"""Running one job: claim it, hand it to the engine, store the outcome. Celery-free, so it reads plainly.

Whatever happens after a successful claim, the job leaves `running`: succeeded with the output, canceled
(a cancel request, keeping the text so far), or failed with a code (the engine's `EngineError.code`,
`deadline_exceeded` keeping the text so far, `timeout`, `model_unavailable`, or `internal_error`).
Only the process dying can leave it running: then its lease runs out, and the sweeper has another worker
take it over (genq/sweeper.py). Every outcome is stored under this claim's attempt number, so a worker
whose lease was taken over cannot overwrite the job.

A database outage loses nothing: the claim, the reads and the store are retried (capped exponential backoff,
genq/store/db_retry.py) for as long as the database is unavailable and this process lives, holding the broker
message unacknowledged. A finished result waits in memory. Storing it after the outage is safe however long
it lasted: the store is a compare-and-set on the claim's attempt, and the claim stays this worker's because
its lease keeper renews the lease as soon as the database answers, before any sweeper may declare it lost
(a sweeper does so only after seeing the lease expired and unrenewed for a while).
"""
from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from genq.lifecycle import DEADLINE_EXCEEDED
from genq.status import JobStatus
from genq.store.db_retry import OutageLog, retry_while_unavailable
from genq.store.delta_sink import DeltaSink
from genq.store.jobs import Claim, JobStore
from genq.store.leases import settle_unclaimable
from genq.store.schema import Job
from models.echo import clip
from models.engine.types import EngineError, GenerationRequest, GenerationResult, InvalidRequest
from models.params import GenerationParams, ParamError
from workers.engine_host import EngineHost, ModelUnavailable
from workers.lease_keeper import STOP_DEADLINE, STOP_LOST, HeldJob, LeaseKeeper

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0  # how long a stopped request may take to hand back its partial result
DEFAULT_LEASE_S = 30.0


class JobOutcome(str, enum.Enum):
    SKIPPED = "skipped"  # not queued any more (redelivered message, canceled, or another worker has it)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # its queue time-to-live ran out before this claim


class DeadlineExceeded(Exception):
    """The attempt ran past the job's deadline_seconds; `result` holds the partial output, if it came back."""

    def __init__(self, message: str, result: GenerationResult | None):
        super().__init__(message)
        self.result = result


def execute_job(
    job_id: str,
    store: JobStore,
    host: EngineHost,
    worker_id: str,
    timeout: float,
    keeper: LeaseKeeper | None = None,
    lease_seconds: float = DEFAULT_LEASE_S,
    events: DeltaSink | None = None,
) -> JobOutcome:
    """Run job `job_id` if this call wins the claim; returns what became of it.

    `keeper` renews the claim's lease and stops the generation on a cancel request (workers/lease_keeper.py);
    without one (tests) the job is held for `lease_seconds` and only deadlines and timeouts stop it.
    `events` receives the text as the engine generates it (for GET /v1/jobs/{id}/events); it is flushed
    before the outcome is stored, so the job's text events precede its final status event.
    While the database is unavailable this call waits (see the module docstring).
    """
    outage = OutageLog(log, f"job {job_id}: claiming")
    claim = retry_while_unavailable(lambda: store.claim(job_id, worker_id, lease_seconds), outage)
    if claim is None:
        settled = retry_while_unavailable(lambda: settle_unclaimable(store, job_id), outage)
        if settled is not None:
            log.info("job %s: %s instead of running", job_id, settled)
            return {"expired": JobOutcome.EXPIRED, "canceled": JobOutcome.CANCELED}.get(settled, JobOutcome.FAILED)
        log.info("job %s is not queued; skipping", job_id)
        return JobOutcome.SKIPPED
    held = keeper.hold(claim) if keeper is not None else HeldJob(claim)
    try:
        outcome = _run_claimed(claim, held, store, host, timeout, events)
    finally:
        if keeper is not None:
            keeper.release(held)
    log.info("job %s: %s (attempt %d)", job_id, outcome.value, claim.attempt)
    return outcome


def _run_claimed(
    claim: Claim, held: HeldJob, store: JobStore, host: EngineHost, timeout: float, events: DeltaSink | None
) -> JobOutcome:
    job = retry_while_unavailable(lambda: store.get(claim.job_id), OutageLog(log, f"job {claim.job_id}: reading"))
    if job is None:  # deleted between claim and read; nothing to store
        return JobOutcome.SKIPPED
    writer = _OutcomeWriter(store, claim, events)
    try:
        result = _wait_for_result(job, held, host, timeout, events)
    except DeadlineExceeded as e:
        output = _output(e.result) if e.result is not None else {}
        return writer.failure(DEADLINE_EXCEEDED, str(e), **output)
    except EngineError as e:
        return writer.failure(e.code, str(e) or e.code)
    except ParamError as e:  # a stored record the API would have refused (changed by hand, or older bounds)
        return writer.failure(InvalidRequest.code, f"params.{e.field}: {e.message}")
    except ModelUnavailable as e:
        return writer.failure(e.code, str(e))
    except TimeoutError as e:
        return writer.failure("timeout", str(e) or f"no result within {timeout:g}s")
    except Exception as e:  # a bug or an engine crash: the job must still leave `running`
        log.exception("job %s failed unexpectedly", claim.job_id)
        return writer.failure("internal_error", f"{type(e).__name__}: {e}")
    return writer.result(held, result)


def build_request(job: Job) -> GenerationRequest:
    """The engine request for a stored job (its params are the resolved record). Its priority orders the
    engine's admission as well as the broker's delivery."""
    params = GenerationParams.from_dict(job.params)
    return GenerationRequest(
        request_id=job.id, params=params, prompt=job.input.get("prompt"), messages=job.input.get("messages"),
        priority=job.priority,
    )


def _wait_for_result(
    job: Job, held: HeldJob, host: EngineHost, timeout: float, events: DeltaSink | None
) -> GenerationResult:
    engine = host.get(job.model)
    on_event = events.listener(held.claim.attempt) if events is not None else None  # text of this attempt only
    handle = engine.submit(build_request(job), on_event=on_event)
    held.attach(handle)
    wait_s, by_deadline = timeout, False
    if job.deadline_seconds is not None:
        left = max(0.0, held.started + job.deadline_seconds - time.monotonic())
        if left < timeout:
            wait_s, by_deadline = left, True
    try:
        result = handle.wait(wait_s)
    except TimeoutError:
        result = None
    if result is not None:
        return result
    if not by_deadline:
        handle.cancel()
        raise TimeoutError(f"no result within {timeout:g}s")
    # past the deadline: stop the request and keep what it produced (it leaves the batch within a step)
    held.stop(STOP_DEADLINE)
    try:
        partial = handle.wait(STOP_GRACE_S)
    except TimeoutError:
        partial = None
    raise DeadlineExceeded(f"the job ran past its deadline of {job.deadline_seconds}s", partial)


def _output(result: GenerationResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "logprobs": result.logprobs,
    }


class _OutcomeWriter:
    """Stores one claim's outcome: after the job's pending text events, under the claim's attempt, retried
    while the database is unavailable (for as long as this process lives: the result exists nowhere else)."""

    def __init__(self, store: JobStore, claim: Claim, events: DeltaSink | None):
        self._store, self._claim, self._events = store, claim, events
        self._outage = OutageLog(log, f"job {claim.job_id} (attempt {claim.attempt}): storing its outcome")

    def result(self, held: HeldJob, result: GenerationResult) -> JobOutcome:
        job_id, attempt, output = self._claim.job_id, self._claim.attempt, _output(result)
        if result.finish_reason == "canceled":
            if held.stop_reason == STOP_LOST:
                log.info("job %s: attempt %d lost its claim; its result is dropped", job_id, attempt)
                return JobOutcome.SKIPPED
            if held.stop_reason == STOP_DEADLINE:
                return self.failure(DEADLINE_EXCEEDED, "the job ran past its deadline", **output)
            won = self._store_as(JobStatus.CANCELED, None,
                                 lambda: self._store.cancel(job_id, attempt=attempt, **output))
            return JobOutcome.CANCELED if won else JobOutcome.SKIPPED
        succeeded = self._store_as(JobStatus.SUCCEEDED, None,
                                   lambda: self._store.succeed(job_id, attempt=attempt, **output))
        if not succeeded:
            log.info("job %s was no longer running under attempt %d when its result arrived (canceled or taken "
                     "over)", job_id, attempt)
            return JobOutcome.SKIPPED
        return JobOutcome.SUCCEEDED

    def failure(self, code: str, message: str, **output: Any) -> JobOutcome:
        job_id, attempt = self._claim.job_id, self._claim.attempt
        message = clip(message)  # whatever it quotes from the request stays short, in the log and on the job
        log.warning("job %s failed: %s: %s", job_id, code, message)
        won = self._store_as(JobStatus.FAILED, code,
                             lambda: self._store.fail(job_id, code, message, attempt=attempt, **output))
        return JobOutcome.FAILED if won else JobOutcome.SKIPPED

    def _store_as(self, status: JobStatus, error_code: str | None, write: Callable[[], bool]) -> bool:
        """Run `write` (a compare-and-set under the claim) until it is answered; whether it changed the job."""
        uncertain = False  # a write failed on a lost connection: its commit may have happened all the same

        def attempt() -> bool:
            nonlocal uncertain
            if self._events is not None:
                self._events.flush(raise_unavailable=True)  # the job's text events go before its final status
            try:
                return bool(write())
            except Exception:
                uncertain = True
                raise

        if retry_while_unavailable(attempt, self._outage):
            return True
        if not uncertain:
            return False
        # refused now: was it by an earlier try that committed before its answer was lost?
        job = retry_while_unavailable(lambda: self._store.get(self._claim.job_id), self._outage)
        return (job is not None and job.status == status.value and job.attempts == self._claim.attempt
                and job.error_code == error_code)
