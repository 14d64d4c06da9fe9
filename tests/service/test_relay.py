"""The publish relay (genq/relay.py): a job the broker refused stays queued and unpublished, and is published
once the broker answers; a refused publication is given back so the next try goes at once. Real brokers: a
Redis URL nobody listens on (refuses), and the file-system broker (accepts, messages counted there)."""
from __future__ import annotations

from pathlib import Path

import pytest

from genq.broker import Publisher, PublishError, make_celery
from genq.relay import PublishRelay, mark_unpublished, publish_job, publish_unpublished
from genq.settings import Settings
from genq.store.jobs import JobStore
from genq.store.schema import utcnow
from genq.sweeper import sweep

PARAMS = {"max_new_tokens": 8}


@pytest.fixture
def publisher(settings: Settings) -> Publisher:
    return Publisher(make_celery(settings))


@pytest.fixture
def refusing(settings: Settings) -> Publisher:
    return Publisher(make_celery(Settings.from_env({"DATABASE_URL": settings.database_url,
                                                    "GENQ_BROKER_URL": "redis://127.0.0.1:9/0"})))


def _messages(settings: Settings) -> int:
    return len(list((Path(settings.broker_url[len("filesystem://"):]) / "queue").glob("*.msg")))


def _unpublished(store: JobStore) -> str:
    job = store.create(model="m", input={"prompt": "hi"}, params=PARAMS)
    mark_unpublished(store, [job.id])
    return job.id


def test_a_refused_publication_is_given_back(store: JobStore, refusing: Publisher) -> None:
    job = store.get(_unpublished(store))
    assert job is not None
    with pytest.raises(PublishError):
        publish_job(store, refusing, job, utcnow())
    again = store.get(job.id)
    assert again is not None and again.published_at is None and again.status == "queued"


def test_a_relay_round_publishes_each_unpublished_job_once(store: JobStore, publisher: Publisher,
                                                           settings: Settings) -> None:
    publish_unpublished(store, publisher)  # whatever earlier tests on this database left
    before = _messages(settings)
    ids = [_unpublished(store) for _ in range(3)]
    assert publish_unpublished(store, publisher) == (3, False)
    assert publish_unpublished(store, publisher) == (0, False)  # a second relay finds nothing left
    assert _messages(settings) - before == 3
    assert all(store.get(i).published_at is not None for i in ids)  # type: ignore[union-attr]


def test_the_relay_thread_publishes_what_was_refused_once_woken(store: JobStore, publisher: Publisher,
                                                                settings: Settings) -> None:
    publish_unpublished(store, publisher)  # whatever earlier tests on this database left
    before = _messages(settings)
    job_id = _unpublished(store)
    relay = PublishRelay(store, publisher, interval=0.05)
    try:
        relay.wake()
        for _ in range(100):
            if (job := store.get(job_id)) is not None and job.published_at is not None:
                break
            relay._stop.wait(0.05)
        assert store.get(job_id).published_at is not None  # type: ignore[union-attr]
        assert _messages(settings) - before == 1 and not relay.pending
    finally:
        relay.stop()


def test_the_sweeper_publishes_an_unpublished_job_at_once(store: JobStore, publisher: Publisher,
                                                          settings: Settings) -> None:
    publish_unpublished(store, publisher)  # whatever earlier tests on this database left
    before = _messages(settings)
    job_id = _unpublished(store)  # as left by an API process that died before its relay sent it
    assert sweep(store, publisher, republish_after=60).republished >= 1
    assert _messages(settings) - before >= 1 and store.get(job_id).published_at is not None  # type: ignore[union-attr]
