"""A stopping worker hands its running job back (genq.store.leases.hand_back, workers/shutdown.py): the next
claim takes it over at once, and the old attempt can store nothing after that."""
from __future__ import annotations

from genq.store.jobs import JobStore
from genq.store.leases import hand_back

PARAMS = {"max_new_tokens": 8}
RESULT = {"text": "x", "finish_reason": "length", "prompt_tokens": 1, "completion_tokens": 1}


def test_a_handed_back_job_is_taken_over_at_once_and_its_old_attempt_stores_nothing(store: JobStore) -> None:
    job = store.create(model="m", input={"prompt": "hi"}, params=PARAMS)
    first = store.claim(job.id, "w1", lease_seconds=30)
    assert first is not None and store.claim(job.id, "w2", lease_seconds=30) is None  # held under its lease
    assert hand_back(store, job.id, first.attempt)
    second = store.claim(job.id, "w2", lease_seconds=30)
    assert second is not None and second.attempt == first.attempt + 1
    assert not store.succeed(job.id, attempt=first.attempt, **RESULT)
    assert store.succeed(job.id, attempt=second.attempt, **RESULT)


def test_a_finished_job_is_not_handed_back(store: JobStore) -> None:
    job = store.create(model="m", input={"prompt": "hi"}, params=PARAMS)
    claim = store.claim(job.id, "w1", lease_seconds=30)
    assert claim is not None and store.succeed(job.id, attempt=claim.attempt, **RESULT)
    assert not hand_back(store, job.id, claim.attempt)
    assert store.claim(job.id, "w2", lease_seconds=30) is None
