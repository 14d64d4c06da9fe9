"""One signed delivery attempt of a webhook message, and the record of how it went.

`deliver` makes one POST and returns an `Attempt` for the caller to store; the caller schedules the
next attempt at `next_retry_at` when the outcome is `retry`, reusing the same message id, so the
receiver sees one `webhook-id` per event however many attempts it takes.

Outcomes:
- `succeeded`: a 2xx response.
- `retry`: no response (timeout, connection or DNS error), 5xx or 429, with retries left.
- `gone`: 410 Gone; the receiver asks us to stop sending to this endpoint.
- `failed`: final. Any other response (3xx, since redirects are never followed; 4xx), a refused URL,
  or a retryable failure with no retries left.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import requests

from genq.webhooks.retry import RetryPolicy, is_retryable
from genq.webhooks.signing import signed_headers
from genq.webhooks.transport import guarded_session
from genq.webhooks.urls import AllowList, WebhookURLError, check_url_syntax

USER_AGENT = "genq-webhooks/0.1"
# (connect, read) seconds: a receiver should acknowledge quickly and do its work afterwards.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 15.0)
EXCERPT_BYTES = 1024
MAX_ERROR_CHARS = 500  # library error messages can be long; the record keeps their start

AttemptOutcome = Literal["succeeded", "retry", "failed", "gone"]


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt did. Exactly one of `status_code` and `error` is set."""

    number: int  # 1-based attempt number of this message
    started_at: datetime  # UTC
    outcome: AttemptOutcome
    status_code: int | None  # the response's status, None when there was no response
    error: str | None  # "<code>: <detail>" when there was no response; codes listed in `deliver`
    duration_s: float
    response_excerpt: str  # the first EXCERPT_BYTES of the response body, decoded leniently
    next_retry_at: datetime | None  # set exactly when outcome == "retry"

    def as_record(self) -> dict[str, Any]:
        """JSON-ready dict (datetimes as ISO 8601 strings) for the caller to store."""
        record = asdict(self)
        record["started_at"] = self.started_at.isoformat()
        record["next_retry_at"] = self.next_retry_at.isoformat() if self.next_retry_at else None
        return record


def deliver(
    url: str,
    body: bytes,
    msg_id: str,
    secrets: Sequence[str],
    allow: AllowList,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    *,
    attempt: int = 1,
    policy: RetryPolicy = RetryPolicy(),
    verify: bool | str = True,
) -> Attempt:
    """POST `body` (JSON bytes) to `url`, signed with every secret in `secrets`, as attempt `attempt`.

    Never raises for anything the receiver or the network does; the `error` codes are `timeout`,
    `connection_error` (includes DNS failures), `request_error`, `webhook_url_invalid` and
    `webhook_url_forbidden` (the URL, or what its host resolves to now, is not allowed). Raises
    ValueError only for the caller's own mistakes (bad secret, message id or body type).
    `verify` is passed to requests (a CA bundle path in tests; never False in production).
    """
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    headers = {
        "user-agent": USER_AGENT,
        "content-type": "application/json",
        **signed_headers(msg_id, body, secrets, now=started_at.timestamp()),
    }

    def done(
        outcome: AttemptOutcome, status: int | None, error: str | None, excerpt: str = "", retry_in: float | None = None
    ) -> Attempt:
        finished_at = datetime.now(UTC)
        return Attempt(
            number=attempt,
            started_at=started_at,
            outcome=outcome,
            status_code=status,
            error=None if error is None else error[:MAX_ERROR_CHARS],
            duration_s=time.monotonic() - clock,
            response_excerpt=excerpt,
            next_retry_at=None if retry_in is None else finished_at + timedelta(seconds=retry_in),
        )

    def retry_or_fail(
        status: int | None, error: str | None, excerpt: str = "", retry_after: str | None = None
    ) -> Attempt:
        delay = policy.next_delay(attempt, status, retry_after)
        return done("failed", status, error, excerpt) if delay is None else done("retry", status, error, excerpt, delay)

    try:
        check_url_syntax(url, allow)
    except WebhookURLError as e:
        return done("failed", None, f"{e.code}: {e.message}")

    with guarded_session(allow) as session:
        try:
            response = session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True, verify=verify
            )
        except WebhookURLError as e:  # raised at connect time: the host resolves to a forbidden address now
            return done("failed", None, f"{e.code}: {e.message}")
        except requests.Timeout as e:  # before ConnectionError: ConnectTimeout is both
            return retry_or_fail(None, f"timeout: {e}")
        except requests.ConnectionError as e:
            return retry_or_fail(None, f"connection_error: {e}")
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as e:
            return done("failed", None, f"webhook_url_invalid: {e}")
        except requests.RequestException as e:
            return retry_or_fail(None, f"request_error: {e}")
        with response:
            status = response.status_code
            excerpt = _read_excerpt(response)
            if 200 <= status <= 299:
                return done("succeeded", status, None, excerpt)
            if status == 410:
                return done("gone", status, None, excerpt)
            if is_retryable(status):
                return retry_or_fail(status, None, excerpt, response.headers.get("retry-after"))
            return done("failed", status, None, excerpt)


def _read_excerpt(response: requests.Response) -> str:
    """At most EXCERPT_BYTES of the body; a receiver cannot make us download more, and a body that
    breaks off midway still leaves the status to classify by."""
    data = b""
    try:
        for chunk in response.iter_content(chunk_size=EXCERPT_BYTES):
            data += chunk
            if len(data) >= EXCERPT_BYTES:
                break
    except (requests.RequestException, OSError):
        pass
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace")
