"""Running one job: claim it, hand it to the engine, store the outcome. Celery-free, so it reads plainly.

Whatever happens after a successful claim, the job leaves `running`: succeeded with the output, canceled
(a cancel request, keeping the text so far), or failed with a code (the engine's `EngineError.code`,
`deadline_exceeded` keeping the text so far, `timeout`, `model_unavailable`, or `internal_error`).
Only the process dying can leave it running: then its lease runs out, and the sweeper has another worker
take it over (genq/sweeper.py). Every outcome is stored under this claim's attempt number, so a worker
whose lease was taken over cannot overwrite the job.
"""
from __future__ import annotations

import enum
import logging
import time
from typing import Any

from genq.delta_sink import DeltaSink
from genq.jobs import Claim, JobStore
from genq.leases import settle_unclaimable
from genq.lifecycle import DEADLINE_EXCEEDED
from genq.schema import Job
from models.echo import clip
from models.engine.types import EngineError, GenerationRequest, GenerationResult, InvalidRequest
from models.params import GenerationParams, ParamError
from workers.engine_host import EngineHost, ModelUnavailable
from workers.lease import STOP_DEADLINE, STOP_LOST, HeldJob, LeaseKeeper

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 3  # a database blip while storing a finished result should not lose it
STOP_GRACE_S = 30.0  # how long a stopped request may take to hand back its partial result
DEFAULT_LEASE_S = 30.0


class Outcome(str, enum.Enum):
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
) -> Outcome:
    """Run job `job_id` if this call wins the claim; returns what became of it.

    `keeper` renews the claim's lease and stops the generation on a cancel request (workers/lease.py);
    without one (tests) the job is held for `lease_seconds` and only deadlines and timeouts stop it.
    `events` receives the text as the engine generates it (for GET /v1/jobs/{id}/events); it is flushed
    before the outcome is stored, so the job's text events precede its final status event.
    """
    claim = store.claim(job_id, worker_id, lease_seconds)
    if claim is None:
        settled = settle_unclaimable(store, job_id)
        if settled is not None:
            log.info("job %s: %s instead of running", job_id, settled)
            return {"expired": Outcome.EXPIRED, "canceled": Outcome.CANCELED}.get(settled, Outcome.FAILED)
        log.info("job %s is not queued; skipping", job_id)
        return Outcome.SKIPPED
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
) -> Outcome:
    job = store.get(claim.job_id)
    if job is None:  # deleted between claim and read; nothing to store
        return Outcome.SKIPPED
    try:
        result = _generate(job, held, host, timeout, events)
    except DeadlineExceeded as e:
        output = _output(e.result) if e.result is not None else {}
        return _store_failure(store, claim, DEADLINE_EXCEEDED, str(e), **output)
    except EngineError as e:
        return _store_failure(store, claim, e.code, str(e) or e.code)
    except ParamError as e:  # a stored record the API would have refused (changed by hand, or older bounds)
        return _store_failure(store, claim, InvalidRequest.code, f"params.{e.field}: {e.message}")
    except ModelUnavailable as e:
        return _store_failure(store, claim, e.code, str(e))
    except TimeoutError as e:
        return _store_failure(store, claim, "timeout", str(e) or f"no result within {timeout:g}s")
    except Exception as e:  # a bug or an engine crash: the job must still leave `running`
        log.exception("job %s failed unexpectedly", claim.job_id)
        return _store_failure(store, claim, "internal_error", f"{type(e).__name__}: {e}")
    return _store_result(store, claim, held, result)


def build_request(job: Job) -> GenerationRequest:
    """The engine request for a stored job (its params are the resolved record). Its priority orders the
    engine's admission as well as the broker's delivery."""
    params = GenerationParams.from_dict(job.params)
    return GenerationRequest(
        request_id=job.id, params=params, prompt=job.input.get("prompt"), messages=job.input.get("messages"),
        priority=job.priority,
    )


def _generate(
    job: Job, held: HeldJob, host: EngineHost, timeout: float, events: DeltaSink | None
) -> GenerationResult:
    try:
        return _wait_for_result(job, held, host, timeout, events)
    finally:
        if events is not None:
            try:
                events.flush()
            except Exception:  # the text stream is a view; losing part of it must not lose the result
                log.warning("flushing the text events of job %s failed", job.id, exc_info=True)


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


def _store_result(store: JobStore, claim: Claim, held: HeldJob, result: GenerationResult) -> Outcome:
    job_id, output = claim.job_id, _output(result)
    if result.finish_reason == "canceled":
        if held.stop_reason == STOP_LOST:
            log.info("job %s: attempt %d lost its claim; its result is dropped", job_id, claim.attempt)
            return Outcome.SKIPPED
        if held.stop_reason == STOP_DEADLINE:
            return _store_failure(store, claim, DEADLINE_EXCEEDED, "the job ran past its deadline", **output)
        won = _retrying(lambda: store.cancel(job_id, attempt=claim.attempt, **output))
        return Outcome.CANCELED if won else Outcome.SKIPPED
    won = _retrying(lambda: store.succeed(job_id, attempt=claim.attempt, **output))
    if not won:
        log.info("job %s was no longer running under attempt %d when its result arrived (canceled or taken over)",
                 job_id, claim.attempt)
        return Outcome.SKIPPED
    return Outcome.SUCCEEDED


def _store_failure(store: JobStore, claim: Claim, code: str, message: str, **output: Any) -> Outcome:
    message = clip(message)  # whatever it quotes from the request stays short, in the log and on the job
    log.warning("job %s failed: %s: %s", claim.job_id, code, message)
    won = _retrying(lambda: store.fail(claim.job_id, code, message, attempt=claim.attempt, **output))
    return Outcome.FAILED if won else Outcome.SKIPPED


def _retrying(write: Any) -> bool:
    for attempt in range(STORE_ATTEMPTS):
        try:
            return bool(write())
        except Exception:
            if attempt == STORE_ATTEMPTS - 1:
                raise
            log.warning("storing a job outcome failed; retrying", exc_info=True)
            time.sleep(0.5 * 2**attempt)
    return False
