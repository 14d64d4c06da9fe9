"""Per-key quotas, held in the database: concurrent unfinished jobs and tokens per UTC day (a job reserves its
prompt's tokens plus max_new_tokens at submit; its end settles the reservation to what it used). Over a limit:
429 with Retry-After and the IETF RateLimit fields; a batch over it is refused whole. Concurrent submissions
through two API processes never get past a limit."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import requests
from key_fixtures import KeyedApi, bearer, keyed_api, submit  # noqa: F401  (fixture)
from sqlalchemy import func, select

from genq.store.quotas import day_of, tokens_used
from genq.store.schema import ApiKey, Batch, Job, utcnow


def _owner(keyed_api: KeyedApi, key: str) -> str:
    found = keyed_api.keys.find(key)
    assert found is not None
    return found.id


def _jobs_of(keyed_api: KeyedApi, owner: str) -> int:
    with keyed_api.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner)) or 0


def _used(keyed_api: KeyedApi, owner: str) -> int:
    with keyed_api.services.sessions() as session:
        return tokens_used(session, owner, day_of(utcnow()))


def _concurrently(keyed_api: KeyedApi, key: str, n: int, body: dict | None = None) -> list[requests.Response]:
    """`n` submissions at once, alternating between the two API processes."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: submit(keyed_api.urls[i % 2], key, body), range(n)))


def test_concurrent_submissions_through_two_processes_never_pass_max_concurrent(keyed_api: KeyedApi) -> None:
    key = keyed_api.new_key("conc", max_concurrent=3)
    answers = _concurrently(keyed_api, key, 16)
    accepted = [r for r in answers if r.status_code == 202]
    refused = [r for r in answers if r.status_code == 429]
    assert len(accepted) == 3 and len(refused) == 13, [r.text for r in answers if r.status_code not in (202, 429)]
    r = refused[0]
    assert r.json()["error"]["code"] == "concurrent_quota_exceeded"
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["RateLimit-Policy"] == '"concurrent";q=3;qu="concurrent-requests"'
    assert r.headers["RateLimit"] == '"concurrent";r=0;t=2'
    assert _jobs_of(keyed_api, _owner(keyed_api, key)) == 3

    # a job that ends frees its place
    job_id = accepted[0].json()["id"]
    assert requests.post(f"{keyed_api.url}/v1/jobs/{job_id}/cancel", headers=bearer(key), timeout=30).status_code == 200
    assert submit(keyed_api.url, key).status_code == 202
    assert submit(keyed_api.url, key).status_code == 429


def test_a_batch_over_a_quota_is_refused_whole_before_anything_is_created(keyed_api: KeyedApi) -> None:
    key = keyed_api.new_key("batch", max_concurrent=2)
    owner = _owner(keyed_api, key)
    lines = b"".join(b'{"custom_id": "%d", "prompt": "x"}\n' % i for i in range(3))
    r = requests.post(keyed_api.url + "/v1/batches", data=lines,
                      headers={**bearer(key), "Content-Type": "application/jsonl"}, timeout=30)
    assert r.status_code == 429 and r.json()["error"]["code"] == "concurrent_quota_exceeded", r.text
    assert "Retry-After" in r.headers and "RateLimit" in r.headers
    with keyed_api.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Batch).where(Batch.owner == owner)) == 0
    assert _jobs_of(keyed_api, owner) == 0
    r = requests.post(keyed_api.url + "/v1/batches", data=lines.split(b"\n", 1)[1],  # two lines fit
                      headers={**bearer(key), "Content-Type": "application/jsonl"}, timeout=30)
    assert r.status_code == 202 and r.json()["counts"]["total"] == 2


def test_tokens_per_day_reserve_prompt_plus_max_new_tokens_and_settle_to_what_was_used(keyed_api: KeyedApi) -> None:
    key = keyed_api.new_key("tokens", tokens_per_day=1000)
    owner = _owner(keyed_api, key)
    body = {"prompt": "Hi", "params": {"max_new_tokens": 400}}
    first = submit(keyed_api.url, key, body)
    assert first.status_code == 202
    with keyed_api.services.sessions() as session:
        reserved = session.get(Job, first.json()["id"]).tokens_reserved  # type: ignore[union-attr]
    assert reserved is not None and 400 < reserved < 450  # the prompt's few tokens (chat template) + 400
    assert _used(keyed_api, owner) == reserved
    assert submit(keyed_api.url, key, body).status_code == 202
    over = submit(keyed_api.url, key, body)
    assert over.status_code == 429 and over.json()["error"]["code"] == "tokens_quota_exceeded", over.text
    midnight_s = (datetime.combine(utcnow().date(), datetime.max.time(), utcnow().tzinfo) - utcnow()).total_seconds()
    assert 1 <= int(over.headers["Retry-After"]) <= midnight_s + 2
    assert over.headers["RateLimit-Policy"] == '"tokens";q=1000;w=86400;qu="tokens"'
    assert over.headers["RateLimit"] == f'"tokens";r={1000 - 2 * reserved};t={over.headers["Retry-After"]}'
    assert _used(keyed_api, owner) == 2 * reserved  # the refused one reserved nothing

    # the first job ends having used 12 + 5 tokens: the rest of its reservation is free again
    store = keyed_api.services.store
    assert store.claim(first.json()["id"], "test-worker") is not None
    assert store.succeed(first.json()["id"], text="ok", finish_reason="eos", prompt_tokens=12, completion_tokens=5)
    assert _used(keyed_api, owner) == reserved + 17
    assert submit(keyed_api.url, key, body).status_code == 202


def test_concurrent_submissions_through_two_processes_never_pass_tokens_per_day(keyed_api: KeyedApi) -> None:
    key = keyed_api.new_key("tokens-conc", tokens_per_day=10**9)
    owner = _owner(keyed_api, key)
    body = {"prompt": "Hi", "params": {"max_new_tokens": 100}}
    first = submit(keyed_api.url, key, body)
    with keyed_api.services.sessions.begin() as session:
        job = session.get(Job, first.json()["id"])
        key_row = session.get(ApiKey, owner)
        assert job is not None and job.tokens_reserved and key_row is not None
        reserve = job.tokens_reserved
        key_row.tokens_per_day = 5 * reserve  # room for 4 more jobs like it
    answers = _concurrently(keyed_api, key, 16, body)
    assert sorted(r.status_code for r in answers) == [202] * 4 + [429] * 12, [r.text for r in answers]
    assert _used(keyed_api, owner) == 5 * reserve


def test_a_retried_job_counts_again_in_both_quotas_and_settles_once_more(keyed_api: KeyedApi) -> None:
    key = keyed_api.new_key("retry", max_concurrent=1, tokens_per_day=10**6)
    owner = _owner(keyed_api, key)
    store = keyed_api.services.store
    first = submit(keyed_api.url, key).json()["id"]
    reserved = store.get(first).tokens_reserved  # type: ignore[union-attr]
    assert reserved and _used(keyed_api, owner) == reserved
    assert store.claim(first, "test-worker") is not None
    assert store.fail(first, "boom", "it broke")  # ran, used nothing it reported: its reservation is freed
    assert _used(keyed_api, owner) == 0
    second = submit(keyed_api.url, key)
    assert second.status_code == 202  # the failed job no longer counts

    job = store.get(first)
    assert job is not None and store.retry(job)  # an operator's retry: counted again, past the limit
    assert _used(keyed_api, owner) == 2 * reserved
    assert requests.post(f"{keyed_api.url}/v1/jobs/{second.json()['id']}/cancel", headers=bearer(key),
                         timeout=30).status_code == 200
    assert submit(keyed_api.url, key).status_code == 429  # the retried job holds the one place
    assert store.claim(first, "test-worker") is not None
    assert store.succeed(first, text="ok", finish_reason="eos", prompt_tokens=3, completion_tokens=4)
    assert _used(keyed_api, owner) == 7  # the retried run's tokens, not its reservation twice over
    assert submit(keyed_api.url, key).status_code == 202
    with keyed_api.services.sessions() as session:
        live = session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner,
                                                                          Job.status.in_(["queued", "running"])))
        assert session.scalar(select(ApiKey.live_jobs).where(ApiKey.id == owner)) == live == 1
