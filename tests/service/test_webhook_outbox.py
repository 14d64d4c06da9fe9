"""Job webhooks in the service: validated at submit, created with the status change (outbox), delivered signed
with the stored secrets, retried, stopped by 410, listed, redelivered, swept. Real database, real receiver;
the delivery runner is called directly here (the Celery task around it runs in the end-to-end tests)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update
from standardwebhooks.webhooks import Webhook
from webhooks.receiver import Receiver, Reply

from api import create_app
from genq.settings import Settings
from genq.store.schema import WebhookDelivery, utcnow
from genq.webhooks.delivery_runner import DeliveryContext, run_delivery

PROMPT = {"prompt": "Hello", "params": {"max_new_tokens": 4}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _settings(database_url: str, broker: str, **env: str) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": database_url, "GENQ_BROKER_URL": broker, "GENQ_WEBHOOK_ALLOW": "127.0.0.1",
        "GENQ_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2", **env,
    })


@pytest.fixture
def client(database_url: str, filesystem_broker_url: str) -> FlaskClient:
    return create_app(_settings(database_url, filesystem_broker_url)).test_client()


def _svc(client: FlaskClient) -> Any:
    return client.application.extensions["genq"]


def _ctx(client: FlaskClient, publisher: Any = None) -> DeliveryContext:
    svc = _svc(client)
    return DeliveryContext(svc.deliveries, svc.secrets, svc.settings.webhook_allow, svc.settings.webhook_retry,
                           publisher, timeout=(2.0, 2.0))


def _submit(client: FlaskClient, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={**PROMPT, "webhook": url, **extra})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def _deliveries(client: FlaskClient, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/deliveries")
    assert response.status_code == 200
    return response.get_json()["data"]


def _finish(client: FlaskClient, job_id: str) -> None:
    store = _svc(client).store
    assert store.claim(job_id, "w")
    assert store.succeed(job_id, text="Hi there", finish_reason="eos", prompt_tokens=2, completion_tokens=2)


# ---- submit-time validation ----

@pytest.mark.parametrize("body,code,field", [
    ({"webhook": "ftp://127.0.0.1/x"}, "webhook_url_invalid", "webhook"),
    ({"webhook": 5}, "webhook_url_invalid", "webhook"),
    ({"webhook": "http://10.1.2.3/hook"}, "webhook_url_forbidden", "webhook"),
    ({"webhook": "http://[::1]/hook"}, "webhook_url_forbidden", "webhook"),
    ({"webhook": "http://user:pw@127.0.0.1/hook"}, "webhook_url_invalid", "webhook"),
    ({"webhook": "http://127.0.0.1/h", "webhook_events_filter": ["finished"]}, "webhook_events_filter_invalid",
     "webhook_events_filter"),
    ({"webhook": "http://127.0.0.1/h", "webhook_events_filter": []}, "webhook_events_filter_invalid",
     "webhook_events_filter"),
    ({"webhook_events_filter": ["completed"]}, "invalid_value", "webhook_events_filter"),
], ids=["scheme", "not a string", "private", "loopback v6 not allowed", "credentials", "unknown event",
        "empty filter", "filter without webhook"])
def test_bad_webhook_settings_get_422_naming_the_field(client: FlaskClient, body: dict, code: str, field: str) -> None:
    response = client.post("/v1/jobs", json={**PROMPT, **body})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == code and response.get_json()["error"]["field"] == field


def test_loopback_is_refused_unless_the_configuration_allows_it(database_url: str, filesystem_broker_url: str) -> None:
    strict = create_app(Settings.from_env({"DATABASE_URL": database_url, "GENQ_BROKER_URL": filesystem_broker_url}))
    response = strict.test_client().post("/v1/jobs", json={**PROMPT, "webhook": "http://127.0.0.1:9/hook"})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "webhook_url_forbidden"


def test_the_job_shows_its_webhook_and_the_default_filter(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    assert job["webhook"] == "http://127.0.0.1:9/hook" and job["webhook_events_filter"] == ["completed"]


# ---- the outbox ----

def test_a_completed_event_is_created_with_the_final_status_change_only(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    assert _deliveries(client, job["id"]) == []
    _svc(client).store.claim(job["id"], "w")
    assert _deliveries(client, job["id"]) == []  # started is not in the default filter
    _svc(client).store.fail(job["id"], "boom", "it broke")
    [delivery] = _deliveries(client, job["id"])
    assert (delivery["event"], delivery["status"], delivery["attempt_count"]) == ("job.completed", "pending", 0)
    assert delivery["webhook_id"] == f"msg_{job['id']}_completed"


def test_started_and_completed_each_fire_once_when_both_are_asked_for(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook", webhook_events_filter=["started", "completed"])
    _finish(client, job["id"])
    assert [d["event"] for d in _deliveries(client, job["id"])] == ["job.started", "job.completed"]


def test_a_job_canceled_while_queued_fires_completed(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    assert _svc(client).store.cancel(job["id"])
    [delivery] = _deliveries(client, job["id"])
    assert delivery["event"] == "job.completed" and delivery["status"] == "pending"


def test_a_lost_race_creates_no_delivery(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    store = _svc(client).store
    assert store.cancel(job["id"])
    assert not store.fail(job["id"], "late", "too late")  # the job is already final
    assert len(_deliveries(client, job["id"])) == 1


# ---- delivering ----

def test_the_delivery_is_the_job_object_signed_with_the_secret_the_api_shows(
    client: FlaskClient, receiver: Receiver
) -> None:
    job = _submit(client, receiver.url())
    _finish(client, job["id"])
    [delivery] = _deliveries(client, job["id"])
    assert run_delivery(delivery["id"], _ctx(client)) == "succeeded"
    secret = client.get("/v1/webhooks/secret").get_json()["secret"]
    [request] = receiver.received
    body = Webhook(secret).verify(request.body, request.headers)
    assert body == client.get(f"/v1/jobs/{job['id']}").get_json()
    assert body["status"] == "succeeded" and body["output"]["text"] == "Hi there"
    assert request.headers["webhook-id"] == delivery["webhook_id"]
    [listed] = _deliveries(client, job["id"])
    assert listed["status"] == "succeeded" and listed["attempt_count"] == 1
    assert [(a["number"], a["outcome"], a["status_code"]) for a in listed["attempts"]] == [(1, "succeeded", 200)]


def test_a_delivery_already_done_is_not_sent_again(client: FlaskClient, receiver: Receiver) -> None:
    job = _submit(client, receiver.url())
    _finish(client, job["id"])
    [delivery] = _deliveries(client, job["id"])
    assert run_delivery(delivery["id"], _ctx(client)) == "succeeded"
    assert run_delivery(delivery["id"], _ctx(client)) == "skipped"  # a duplicate message
    assert len(receiver.received) == 1


def test_after_rotation_messages_carry_both_signatures_and_either_secret_verifies(
    client: FlaskClient, receiver: Receiver
) -> None:
    old = client.get("/v1/webhooks/secret").get_json()["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate").get_json()
    new = rotated["secret"]
    assert new != old and new.startswith("whsec_") and len(rotated["previous"]) >= 1
    assert client.get("/v1/webhooks/secret").get_json()["secret"] == new
    job = _submit(client, receiver.url())
    _finish(client, job["id"])
    run_delivery(_deliveries(client, job["id"])[0]["id"], _ctx(client))
    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) >= 2
    for secret in (old, new):
        assert Webhook(secret).verify(request.body, request.headers)["id"] == job["id"]


def test_a_rotated_out_secret_stops_signing_after_the_grace_period(client: FlaskClient) -> None:
    secrets = _svc(client).secrets
    old = secrets.current().secret
    new = secrets.rotate().secret
    assert [s.secret for s in secrets.signing()][:2] == [new, old]
    later = utcnow() + secrets.grace + timedelta(seconds=1)
    assert [s.secret for s in secrets.signing(now=later)] == [new]


def test_failures_are_retried_on_the_schedule_honouring_retry_after(client: FlaskClient, receiver: Receiver) -> None:
    receiver.will_reply(Reply(503, headers={"Retry-After": "1"}), Reply(500))
    job = _submit(client, receiver.url())
    _finish(client, job["id"])
    delivery_id = _deliveries(client, job["id"])[0]["id"]
    ctx = _ctx(client)
    outcomes = [run_delivery(delivery_id, ctx)]
    assert run_delivery(delivery_id, ctx) == "skipped"  # not due yet: Retry-After 1 s beats the 0.2 s schedule
    deadline = time.monotonic() + 10
    while outcomes[-1] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.1)
        outcome = run_delivery(delivery_id, ctx)
        if outcome != "skipped":
            outcomes.append(outcome)
    assert outcomes == ["retry", "retry", "succeeded"]
    [listed] = _deliveries(client, job["id"])
    first, second, third = listed["attempts"]
    assert (first["status_code"], second["status_code"], third["status_code"]) == (503, 500, 200)
    assert second["started_at"] >= first["next_retry_at"]
    waited = _seconds_between(first["started_at"], second["started_at"])
    assert waited >= 1.0  # Retry-After, not the 0.2 s of the schedule
    assert {r.headers["webhook-id"] for r in receiver.received} == {listed["webhook_id"]}


def test_retries_end_when_the_schedule_is_spent(client: FlaskClient, receiver: Receiver) -> None:
    receiver.will_reply(Reply(500), Reply(500), Reply(500), Reply(500))
    job = _submit(client, receiver.url())
    _finish(client, job["id"])
    delivery_id = _deliveries(client, job["id"])[0]["id"]
    deadline = time.monotonic() + 10
    while _deliveries(client, job["id"])[0]["status"] == "pending" and time.monotonic() < deadline:
        run_delivery(delivery_id, _ctx(client))
        time.sleep(0.05)
    [listed] = _deliveries(client, job["id"])
    assert listed["status"] == "failed" and listed["attempt_count"] == 3  # 1 + two scheduled retries
    assert [a["outcome"] for a in listed["attempts"]] == ["retry", "retry", "failed"]


def test_410_gone_stops_this_and_later_deliveries_of_the_job(client: FlaskClient, receiver: Receiver) -> None:
    receiver.will_reply(Reply(410))
    job = _submit(client, receiver.url(), webhook_events_filter=["started", "completed"])
    _svc(client).store.claim(job["id"], "w")
    started = _deliveries(client, job["id"])[0]
    assert run_delivery(started["id"], _ctx(client)) == "gone"
    _svc(client).store.succeed(job["id"], text="x", finish_reason="eos", prompt_tokens=1, completion_tokens=1)
    [listed] = _deliveries(client, job["id"])
    assert listed["status"] == "gone" and listed["next_attempt_at"] is None
    assert len(receiver.received) == 1


def test_redelivery_sends_the_same_message_again_as_a_new_delivery(client: FlaskClient, receiver: Receiver) -> None:
    job = _submit(client, receiver.url())
    _finish(client, job["id"])
    original = _deliveries(client, job["id"])[0]
    run_delivery(original["id"], _ctx(client))
    response = client.post(f"/v1/jobs/{job['id']}/deliveries/{original['id']}/redeliver")
    assert response.status_code == 202
    copy = response.get_json()
    assert copy["redelivery_of"] == original["id"] and copy["webhook_id"] == original["webhook_id"]
    assert copy["status"] == "pending" and copy["id"] != original["id"]
    # while it is pending, a second redelivery is refused
    again = client.post(f"/v1/jobs/{job['id']}/deliveries/{original['id']}/redeliver")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "delivery_pending"
    assert run_delivery(copy["id"], _ctx(client)) == "succeeded"
    first, second = receiver.received
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    assert [d["status"] for d in _deliveries(client, job["id"])] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("path", ["/deliveries/nope/redeliver", "/deliveries/{other}/redeliver",
                                  "/deliveries/" + "é" * 300 + "/redeliver"])
def test_redelivering_an_unknown_delivery_is_404(client: FlaskClient, path: str) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    other = _submit(client, "http://127.0.0.1:9/hook")
    _svc(client).store.cancel(other["id"])
    other_delivery = _deliveries(client, other["id"])[0]["id"]
    response = client.post(f"/v1/jobs/{job['id']}" + path.format(other=other_delivery))
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "delivery_not_found"


def test_deliveries_of_an_unknown_job_are_404(client: FlaskClient) -> None:
    response = client.get("/v1/jobs/6d0f4cbe-7a37-4a4c-9d55-0d8f1d9d4f1a/deliveries")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "job_not_found"


# ---- the sweep ----

def test_the_sweep_picks_up_deliveries_no_message_carries(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    _svc(client).store.cancel(job["id"])
    deliveries = _svc(client).deliveries
    delivery_id = _deliveries(client, job["id"])[0]["id"]
    # just created: its message was published (or is about to be), so the sweep leaves it alone
    assert delivery_id not in deliveries.mark_dispatch_due()
    # its message was lost (published long ago, never consumed): the sweep publishes it once
    later = utcnow() + timedelta(seconds=31)
    assert delivery_id in deliveries.mark_dispatch_due(now=later)
    assert delivery_id not in deliveries.mark_dispatch_due(now=later)


def test_the_sweep_leaves_a_delivery_being_attempted_alone(client: FlaskClient) -> None:
    job = _submit(client, "http://127.0.0.1:9/hook")
    _svc(client).store.cancel(job["id"])
    deliveries = _svc(client).deliveries
    delivery_id = _deliveries(client, job["id"])[0]["id"]
    with _svc(client).sessions.begin() as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(dispatched_at=None))
    assert deliveries.claim(delivery_id) is not None  # an attempt in flight
    assert delivery_id not in deliveries.mark_dispatch_due()
    assert deliveries.claim(delivery_id) is None  # nor can a second attempt start


def test_a_broker_outage_at_the_status_change_loses_no_delivery(database_url: str, tmp_path: Path) -> None:
    # the broker URL points at a port nobody listens on: every publish fails
    settings = _settings(database_url, "redis://127.0.0.1:9/0")
    client = create_app(settings).test_client()
    store = _svc(client).store
    job = store.create(model=settings.default_model, input={"prompt": "x"}, params={},
                       webhook="http://127.0.0.1:9/hook", webhook_events_filter=["completed"])
    assert store.cancel(job.id)  # commits; publishing the delivery then fails and is only logged
    [delivery] = _deliveries(client, job.id)
    assert delivery["status"] == "pending"
    later = utcnow() + timedelta(seconds=31)
    assert _svc(client).deliveries.mark_dispatch_due(now=later) == [delivery["id"]]


def _seconds_between(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))
            ).total_seconds()


def test_the_secret_is_stored_in_the_database_so_every_process_signs_alike(
    client: FlaskClient, database_url: str, filesystem_broker_url: str
) -> None:
    body = client.get("/v1/webhooks/secret").get_json()
    assert body["object"] == "webhook_secret" and body["secret"].startswith("whsec_")
    assert body["grace_period_s"] == 24 * 3600
    other = create_app(_settings(database_url, filesystem_broker_url)).test_client()  # another API process
    assert other.get("/v1/webhooks/secret").get_json()["secret"] == body["secret"]
