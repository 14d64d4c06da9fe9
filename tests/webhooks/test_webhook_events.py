"""Which events fire, how the filter is validated, and what identifies and carries one event."""
import json

import pytest

from genq.webhooks.errors import WebhookValidationError
from genq.webhooks.events import (
    JOB_COMPLETED,
    JOB_STARTED,
    event_body,
    events_for_status,
    message_id,
    validate_events_filter,
)


def test_filter_defaults_to_completed():
    assert validate_events_filter(None) == ("completed",)


@pytest.mark.parametrize(
    "value, expected",
    [
        (["started"], ("started",)),
        (["completed", "started"], ("started", "completed")),
        (["completed", "completed"], ("completed",)),
    ],
)
def test_filter_is_canonicalised(value, expected):
    assert validate_events_filter(value) == expected


@pytest.mark.parametrize("value", [[], "completed", {"completed": True}, ["finished"], ["started", 3], [None]])
def test_bad_filter_is_a_field_level_error(value):
    with pytest.raises(WebhookValidationError) as e:
        validate_events_filter(value)
    assert e.value.field == "webhook_events_filter"
    assert e.value.code == "webhook_events_filter_invalid"


@pytest.mark.parametrize(
    "status, events_filter, expected",
    [
        ("running", ("completed",), ()),
        ("running", ("started",), (JOB_STARTED,)),
        ("running", ("started", "completed"), (JOB_STARTED,)),
        ("succeeded", ("completed",), (JOB_COMPLETED,)),
        ("failed", ("completed",), (JOB_COMPLETED,)),
        ("canceled", ("completed",), (JOB_COMPLETED,)),
        ("canceled", ("started",), ()),
        ("queued", ("started", "completed"), ()),
    ],
)
def test_events_fire_on_start_and_on_every_terminal_status(status, events_filter, expected):
    assert events_for_status(status, events_filter) == expected


def test_message_id_is_stable_per_job_and_event():
    assert message_id("job_01", JOB_COMPLETED) == message_id("job_01", JOB_COMPLETED) == "msg_job_01_completed"
    assert message_id("job_01", JOB_STARTED) != message_id("job_01", JOB_COMPLETED)
    assert message_id("job_02", JOB_COMPLETED) != message_id("job_01", JOB_COMPLETED)
    # a job retried after it ended: new messages, stable within their generation
    assert message_id("job_01", JOB_COMPLETED, 0) == "msg_job_01_completed"
    assert message_id("job_01", JOB_COMPLETED, 1) == message_id("job_01", JOB_COMPLETED, 1) != "msg_job_01_completed"


@pytest.mark.parametrize("job_id, event", [("job.1", JOB_COMPLETED), ("", JOB_STARTED), ("j1", "job.deleted")])
def test_message_id_refuses_what_it_cannot_encode(job_id, event):
    with pytest.raises(ValueError):
        message_id(job_id, event)


def test_body_is_the_job_as_compact_utf8_json():
    job = {"id": "job_1", "status": "succeeded", "output": "Paris — la capitale"}
    body = event_body(job)
    assert body == '{"id":"job_1","status":"succeeded","output":"Paris — la capitale"}'.encode()
    assert json.loads(body) == job
