"""The admin dashboard's database side: job counts kept by triggers, the retry transition, paused queues,
dashboard users (hashes, lock-out, sessions)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select, update

from genq.store import queues
from genq.store.admin_users import FAILURES_FREE, AdminUsers, verify_password
from genq.store.job_counts import counts_by_model
from genq.store.job_events import read_events_of_jobs
from genq.store.jobs import JobStore
from genq.store.schema import AdminUser, Job, utcnow
from genq.webhooks.outbox import DeliveryStore

PARAMS = {"max_new_tokens": 8}


def _actual(store: JobStore) -> dict[str, dict[str, int]]:
    with store.sessions() as session:
        rows = session.execute(select(Job.model, Job.status, func.count()).group_by(Job.model, Job.status)).all()
    out: dict[str, dict[str, int]] = {}
    for model, status, n in rows:
        out.setdefault(model, {})[status] = n
    return out


def _nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {m: {s: n for s, n in by.items() if n} for m, by in counts.items() if any(by.values())}


def test_job_counts_follow_every_insert_transition_and_delete(store: JobStore) -> None:
    jobs = [store.create(model="count-m", input={"prompt": "hi"}, params=PARAMS) for _ in range(4)]
    store.claim(jobs[0].id, "w1")
    store.succeed(jobs[0].id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    store.cancel(jobs[1].id)
    store.claim(jobs[2].id, "w1")
    with store.sessions.begin() as session:  # writes outside the state machine are counted too
        session.execute(update(Job).where(Job.id == jobs[3].id).values(status="failed"))
        session.execute(delete(Job).where(Job.id == jobs[1].id))
    counts = counts_by_model(store.sessions)["count-m"]
    assert counts["succeeded"] == 1 and counts["running"] == 1 and counts["failed"] == 1
    assert counts["canceled"] == 0 and counts["queued"] == 0
    assert _nonzero(counts_by_model(store.sessions)) == _actual(store)


def test_retry_requeues_a_failed_job_as_a_new_attempt_keeping_its_history(store: JobStore) -> None:
    job = store.create(model="retry-m", input={"prompt": "hi"}, params=PARAMS)
    store.claim(job.id, "w1")
    store.fail(job.id, "boom", "it broke", attempt=1)
    failed = store.get(job.id)
    assert store.retry(failed)
    again = store.get(job.id)
    assert again.status == "queued" and again.error_code is None and again.completed_at is None
    assert not store.retry(failed)  # a compare-and-set: only once from the state it was read in
    claim = store.claim(job.id, "w2")
    assert claim is not None and claim.attempt == 2
    with store.sessions() as session:
        statuses = [e.data["status"] for e in read_events_of_jobs(session, {job.id: 0}) if e.kind == "status"]
    assert statuses == ["queued", "running", "failed", "queued", "running"]


def test_a_retried_jobs_webhooks_are_new_messages_to_the_receiver(store: JobStore) -> None:
    # a receiver drops a `webhook-id` it has seen: the retried outcome must come under a new one
    job = store.create(model="retry-m", input={"prompt": "hi"}, params=PARAMS, webhook="http://127.0.0.1:9/h",
                       webhook_events_filter=["completed"])
    store.claim(job.id, "w1")
    store.fail(job.id, "boom", "it broke", attempt=1)
    assert store.retry(store.get(job.id))
    store.claim(job.id, "w2")
    store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1, attempt=2)
    ids = [d.delivery.webhook_id for d in DeliveryStore(store.sessions).for_job(job.id)]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_retry_refuses_a_job_that_did_not_end_badly(store: JobStore) -> None:
    job = store.create(model="retry-m", input={"prompt": "hi"}, params=PARAMS)
    assert not store.retry(store.get(job.id))  # queued
    store.claim(job.id, "w1")
    store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    assert not store.retry(store.get(job.id))  # succeeded


def test_a_paused_queue_keeps_its_jobs_queued_until_resumed(store: JobStore) -> None:
    job = store.create(model="paused-m", input={"prompt": "hi"}, params=PARAMS)
    other = store.create(model="other-m", input={"prompt": "hi"}, params=PARAMS)
    assert queues.pause(store.sessions, "paused-m", "alice")
    assert store.claim(job.id, "w1") is None
    assert store.get(job.id).status == "queued"
    assert store.claim(other.id, "w1") is not None  # other models go on
    assert job.id in [i for i, _ in queues.queued_in_order(store.sessions, "paused-m")]
    assert queues.resume(store.sessions, "paused-m")
    assert store.claim(job.id, "w1") is not None


def test_purge_cancels_only_the_models_waiting_jobs(store: JobStore) -> None:
    waiting = [store.create(model="purge-m", input={"prompt": "hi"}, params=PARAMS) for _ in range(3)]
    running = store.create(model="purge-m", input={"prompt": "hi"}, params=PARAMS)
    store.claim(running.id, "w1")
    assert queues.purge(store, "purge-m") == 3
    assert {store.get(j.id).status for j in waiting} == {"canceled"}
    assert store.get(running.id).status == "running"


def test_admin_passwords_are_scrypt_hashes_and_repeated_failures_lock_the_user(store: JobStore) -> None:
    users = AdminUsers(store.sessions)
    name = f"u{utcnow().timestamp()}"
    assert users.put(name, "correct horse", "admin")
    with store.sessions() as session:
        stored = session.scalar(select(AdminUser.password_hash).where(AdminUser.username == name))
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored) and not verify_password("wrong", stored)
    for _ in range(FAILURES_FREE):
        assert users.login(name, "wrong").principal is None
    locked = users.login(name, "correct horse")  # the right password, but too soon
    assert locked.principal is None and locked.locked_for_s > 0
    later = users.login(name, "correct horse", now=utcnow() + timedelta(minutes=20))
    assert later.principal is not None and later.principal.role == "admin"
    assert users.principal(later.session_token) == later.principal
    users.logout(later.session_token)
    assert users.principal(later.session_token) is None


def test_a_worker_that_stops_beating_is_shown_as_lost_and_a_clean_stop_as_stopped(store: JobStore) -> None:
    from genq.store import worker_registry as registry

    wid = f"host-{utcnow().timestamp()}:1"
    registry.register(store.sessions, worker_id=wid, host="host", pid=1, models=["m"], info={"device": "cpu"},
                      batch_limit=4)
    job = store.create(model="m", input={"prompt": "hi"}, params=PARAMS)
    store.claim(job.id, wid)
    store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=30)
    registry.beat(store.sessions, wid, in_batch=2)
    [view] = [w for w in registry.list_workers(store.sessions) if w.row.id == wid]
    assert view.state == "up" and view.row.in_batch == 2 and view.row.tokens_per_s == 0.5  # 30 tokens a minute
    later = utcnow() + registry.LOST_AFTER + timedelta(seconds=1)
    assert [w.state for w in registry.list_workers(store.sessions, later) if w.row.id == wid] == ["lost"]
    registry.beat(store.sessions, wid, in_batch=0, stopped=True)
    assert [w.state for w in registry.list_workers(store.sessions, later) if w.row.id == wid] == ["stopped"]


def test_the_hours_stats_count_finished_jobs_and_their_latencies(store: JobStore) -> None:
    from genq.store.admin_stats import hour_stats

    before = hour_stats(store.sessions).hour["finished"]
    job = store.create(model="stats-m", input={"prompt": "hi"}, params=PARAMS)
    store.claim(job.id, "w1")
    store.succeed(job.id, text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=7)
    stats = hour_stats(store.sessions)
    assert stats.hour["finished"] == before + 1 and stats.hour["run_p50"] is not None
    assert len(stats.minutes) == 60 and sum(m["finished"] for m in stats.minutes) == stats.hour["finished"]
