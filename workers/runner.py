"""Running one job: claim it, hand it to the engine, store the outcome. Celery-free, so it reads plainly.

Whatever happens after a successful claim, the job leaves `running`: succeeded with the output, or failed
with a code (the engine's `EngineError.code`, `timeout`, `model_unavailable`, or `internal_error`).
Only the process dying can leave it running (its message is redelivered, but then finds it not queued:
a reaper for stale running jobs is future work).
"""
from __future__ import annotations

import enum
import logging
import time
from typing import Any

from genq.delta_sink import DeltaSink
from genq.jobs import JobStore
from genq.schema import Job
from models.engine.types import EngineError, GenerationRequest, GenerationResult
from models.params import GenerationParams
from workers.engine_host import EngineHost, ModelUnavailable

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 3  # a database blip while storing a finished result should not lose it


class Outcome(str, enum.Enum):
    SKIPPED = "skipped"  # not queued any more (redelivered message, canceled, or another worker has it)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


def execute_job(
    job_id: str, store: JobStore, host: EngineHost, worker_id: str, timeout: float, events: DeltaSink | None = None
) -> Outcome:
    """Run job `job_id` if this call wins the claim; returns what became of it.

    `events` receives the text as the engine generates it (for GET /v1/jobs/{id}/events); it is flushed
    before the outcome is stored, so the job's text events precede its final status event.
    """
    if not store.claim(job_id, worker_id):
        log.info("job %s is not queued; skipping", job_id)
        return Outcome.SKIPPED
    job = store.get(job_id)
    if job is None:  # deleted between claim and read; nothing to store
        return Outcome.SKIPPED
    try:
        result = _generate(job, host, timeout, events)
    except EngineError as e:
        return _store_failure(store, job_id, e.code, str(e) or e.code)
    except ModelUnavailable as e:
        return _store_failure(store, job_id, e.code, str(e))
    except TimeoutError as e:
        return _store_failure(store, job_id, "timeout", str(e) or f"no result within {timeout:g}s")
    except Exception as e:  # a bug or an engine crash: the job must still leave `running`
        log.exception("job %s failed unexpectedly", job_id)
        return _store_failure(store, job_id, "internal_error", f"{type(e).__name__}: {e}")
    return _store_result(store, job_id, result)


def build_request(job: Job) -> GenerationRequest:
    """The engine request for a stored job (its params are the resolved record)."""
    params = GenerationParams.from_dict(job.params)
    return GenerationRequest(
        request_id=job.id, params=params, prompt=job.input.get("prompt"), messages=job.input.get("messages")
    )


def _generate(job: Job, host: EngineHost, timeout: float, events: DeltaSink | None) -> GenerationResult:
    engine = host.get(job.model)
    handle = engine.submit(build_request(job), on_event=events.on_event if events is not None else None)
    try:
        result = handle.wait(timeout)
    except TimeoutError:
        handle.cancel()
        raise
    finally:
        if events is not None:
            try:
                events.flush()
            except Exception:  # the text stream is a view; losing part of it must not lose the result
                log.warning("flushing the text events of job %s failed", job.id, exc_info=True)
    if result is None:  # a wait that returns on timeout instead of raising
        handle.cancel()
        raise TimeoutError(f"no result within {timeout:g}s")
    return result


def _store_result(store: JobStore, job_id: str, result: GenerationResult) -> Outcome:
    output: dict[str, Any] = {
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "logprobs": result.logprobs,
    }
    if result.finish_reason == "canceled":
        won = _retrying(lambda: store.cancel(job_id, **output))
        return Outcome.CANCELED if won else Outcome.SKIPPED
    won = _retrying(lambda: store.succeed(job_id, **output))
    if not won:
        log.info("job %s was no longer running when its result arrived (canceled?)", job_id)
        return Outcome.SKIPPED
    return Outcome.SUCCEEDED


def _store_failure(store: JobStore, job_id: str, code: str, message: str) -> Outcome:
    log.warning("job %s failed: %s: %s", job_id, code, message)
    return Outcome.FAILED if _retrying(lambda: store.fail(job_id, code, message)) else Outcome.SKIPPED


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
