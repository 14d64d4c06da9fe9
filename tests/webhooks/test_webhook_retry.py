"""Retries follow the Standard Webhooks schedule, only for failures that may pass, and honour Retry-After."""
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from genq.webhooks.retry import DEFAULT_SCHEDULE, RetryPolicy, parse_retry_after

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_default_schedule_is_the_specification_one():
    assert DEFAULT_SCHEDULE == (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
    assert RetryPolicy().max_attempts == 8


@pytest.mark.parametrize("status", [None, 429, 500, 502, 503, 504, 599])
def test_no_response_5xx_and_429_are_retried_on_schedule(status):
    policy = RetryPolicy()
    assert [policy.next_delay(n, status) for n in range(1, 9)] == [*DEFAULT_SCHEDULE, None]


@pytest.mark.parametrize("status", [200, 204, 301, 302, 400, 401, 403, 404, 408, 410, 422])
def test_success_redirects_gone_and_other_4xx_are_not_retried(status):
    assert RetryPolicy().next_delay(1, status) is None


def test_custom_schedule_sets_the_waits_and_the_number_of_retries():
    policy = RetryPolicy.from_config("1, 2.5,10")
    assert policy.schedule == (1.0, 2.5, 10.0)
    assert [policy.next_delay(n, 503) for n in (1, 2, 3, 4)] == [1.0, 2.5, 10.0, None]
    assert RetryPolicy.from_config("") == RetryPolicy()
    assert RetryPolicy(schedule=()).next_delay(1, 503) is None


def test_retry_after_seconds_lengthens_the_wait():
    assert RetryPolicy().next_delay(1, 429, "120") == 120.0


def test_retry_after_never_shortens_the_scheduled_wait():
    assert RetryPolicy().next_delay(3, 503, "1") == 1800.0


def test_retry_after_http_date_is_honoured():
    when = format_datetime(NOW + timedelta(minutes=10), usegmt=True)  # "Fri, 02 Jan 2026 03:14:05 GMT"
    assert RetryPolicy().next_delay(1, 503, when, now=NOW) == 600.0


def test_retry_after_is_capped():
    policy = RetryPolicy(max_retry_after=3600.0)
    assert policy.next_delay(1, 429, str(30 * 24 * 3600)) == 3600.0
    assert RetryPolicy().next_delay(1, 429, "99999999999") == 36000.0


@pytest.mark.parametrize("header", ["soon", "-5", "1.5", "", "²", "Fri, 32 Foo 2026"])
def test_unreadable_retry_after_is_ignored(header):
    assert RetryPolicy().next_delay(1, 503, header) == 5.0


def test_retry_after_forms_parse():
    assert parse_retry_after(None) is None
    assert parse_retry_after(" 30 ") == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0  # in the past
    assert parse_retry_after("Fri, 02 Jan 2026 03:04:35 GMT", now=NOW) == 30.0


def test_jitter_spreads_waits_within_its_fraction():
    policy = RetryPolicy(jitter=0.2)
    rng = random.Random(7)
    delays = [policy.next_delay(2, 503, rng=rng) for _ in range(200)]
    assert all(240.0 <= d <= 360.0 for d in delays)
    assert max(delays) - min(delays) > 60.0  # spread, not one value
    assert RetryPolicy(jitter=0.0).next_delay(2, 503, rng=rng) == 300.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": (5, -1)},
        {"schedule": (float("inf"),)},
        {"schedule": [5, 10]},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"max_retry_after": float("inf")},
    ],
)
def test_policy_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0])
def test_attempt_numbers_start_at_one(attempt):
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().next_delay(attempt, 503)


def test_schedule_config_must_be_numbers():
    with pytest.raises(ValueError, match="comma-separated seconds"):
        RetryPolicy.from_config("5,five")
