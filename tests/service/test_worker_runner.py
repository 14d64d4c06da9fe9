"""workers.job_runner: a claimed job always leaves `running`, with the engine's result or a coded error.

The engine here is a small scripted stand-in implementing the engine's interface (submit / wait / cancel),
so that each failure mode can be produced on demand; the real engine runs in the end-to-end tests.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from genq.settings import ModelSpec
from genq.store.jobs import JobStore
from models.engine.types import GenerationRequest, GenerationResult, PromptTooLong
from workers.engine_host import EngineHost
from workers.job_runner import JobOutcome, execute_job

MODEL = "m"


class ScriptedHandle:
    def __init__(self, outcome: Callable[[], GenerationResult | None]):
        self.outcome = outcome
        self.canceled = False

    def wait(self, timeout: float | None = None) -> GenerationResult | None:
        return self.outcome()

    def cancel(self) -> None:
        self.canceled = True


class ScriptedEngine:
    def __init__(self, outcome: Callable[[GenerationRequest], GenerationResult | None]):
        self.outcome = outcome
        self.requests: list[GenerationRequest] = []
        self.handles: list[ScriptedHandle] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def submit(self, request: GenerationRequest, on_event: Any = None) -> ScriptedHandle:
        self.requests.append(request)
        handle = ScriptedHandle(lambda: self.outcome(request))
        self.handles.append(handle)
        return handle


def _host(engine: ScriptedEngine) -> EngineHost:
    return EngineHost({MODEL: ModelSpec(MODEL, source=None, kind="gguf")}, lambda spec: engine)  # type: ignore[arg-type]


def _job(store: JobStore, **input: Any) -> str:
    return store.create(model=MODEL, input=input or {"prompt": "hi"}, params={"max_new_tokens": 4}).id


def _ok(request: GenerationRequest) -> GenerationResult:
    return GenerationResult(text="Paris", finish_reason="eos", prompt_tokens=5, completion_tokens=2)


def test_a_successful_generation_is_stored_on_the_job(store: JobStore) -> None:
    engine = ScriptedEngine(_ok)
    job_id = _job(store, messages=[{"role": "user", "content": "capital of France?"}])
    assert execute_job(job_id, store, _host(engine), "w", timeout=5) is JobOutcome.SUCCEEDED
    job = store.get(job_id)
    assert (job.status, job.output_text, job.finish_reason, job.prompt_tokens, job.completion_tokens) == (
        "succeeded", "Paris", "eos", 5, 2)
    request = engine.requests[0]
    assert request.request_id == job_id and request.prompt is None
    assert request.messages == [{"role": "user", "content": "capital of France?"}]
    assert request.params.max_new_tokens == 4


def test_a_redelivered_message_does_not_run_the_job_again(store: JobStore) -> None:
    engine = ScriptedEngine(_ok)
    job_id = _job(store)
    host = _host(engine)
    assert execute_job(job_id, store, host, "w1", timeout=5) is JobOutcome.SUCCEEDED
    assert execute_job(job_id, store, host, "w2", timeout=5) is JobOutcome.SKIPPED
    assert len(engine.requests) == 1 and store.get(job_id).attempts == 1


def test_an_engine_error_fails_the_job_with_its_code(store: JobStore) -> None:
    def too_long(request: GenerationRequest) -> GenerationResult:
        raise PromptTooLong("prompt is 9000 tokens; the context holds 8192")

    job_id = _job(store)
    assert execute_job(job_id, store, _host(ScriptedEngine(too_long)), "w", timeout=5) is JobOutcome.FAILED
    job = store.get(job_id)
    assert (job.status, job.error_code) == ("failed", "prompt_too_long")
    assert "8192" in job.error_message


def test_an_unexpected_exception_fails_the_job_instead_of_leaving_it_running(store: JobStore) -> None:
    def crash(request: GenerationRequest) -> GenerationResult:
        raise RuntimeError("CUDA went away")

    job_id = _job(store)
    assert execute_job(job_id, store, _host(ScriptedEngine(crash)), "w", timeout=5) is JobOutcome.FAILED
    job = store.get(job_id)
    assert (job.status, job.error_code) == ("failed", "internal_error")
    assert "CUDA went away" in job.error_message


@pytest.mark.parametrize("how", ["raises", "returns None"])
def test_a_wait_past_the_timeout_cancels_the_request_and_fails_the_job(store: JobStore, how: str) -> None:
    def slow(request: GenerationRequest) -> GenerationResult | None:
        if how == "raises":
            raise TimeoutError
        return None

    engine = ScriptedEngine(slow)
    job_id = _job(store)
    assert execute_job(job_id, store, _host(engine), "w", timeout=0.01) is JobOutcome.FAILED
    assert store.get(job_id).error_code == "timeout"
    assert engine.handles[0].canceled


def test_a_model_that_fails_to_load_fails_the_job_as_model_unavailable(store: JobStore) -> None:
    def broken(spec: ModelSpec) -> Any:
        raise OSError("weights are corrupt")

    host = EngineHost({MODEL: ModelSpec(MODEL, source=None, kind="gguf")}, broken)  # type: ignore[arg-type]
    job_id = _job(store)
    assert execute_job(job_id, store, host, "w", timeout=5) is JobOutcome.FAILED
    job = store.get(job_id)
    assert job.error_code == "model_unavailable" and "weights are corrupt" in job.error_message


def test_an_engine_canceled_generation_cancels_the_job_keeping_partial_output(store: JobStore) -> None:
    def canceled(request: GenerationRequest) -> GenerationResult:
        return GenerationResult(text="Par", finish_reason="canceled", prompt_tokens=5, completion_tokens=1)

    job_id = _job(store)
    assert execute_job(job_id, store, _host(ScriptedEngine(canceled)), "w", timeout=5) is JobOutcome.CANCELED
    job = store.get(job_id)
    assert (job.status, job.output_text, job.finish_reason) == ("canceled", "Par", "canceled")


def test_the_host_loads_each_model_once_for_concurrent_first_jobs() -> None:
    import threading

    loads: list[str] = []

    def factory(spec: ModelSpec) -> ScriptedEngine:
        loads.append(spec.name)
        return ScriptedEngine(_ok)

    host = EngineHost({MODEL: ModelSpec(MODEL, source=None, kind="gguf")}, factory)  # type: ignore[arg-type]
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(host.get(MODEL))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [MODEL] and len({id(e) for e in got}) == 1 and got[0].started
    host.stop_all()
    assert got[0].stopped
