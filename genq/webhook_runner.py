"""One webhook delivery attempt, end to end: claim, sign and send (genq.webhooks.deliver), record, reschedule.

Celery-free, so it reads plainly and tests call it directly; workers/webhook_tasks.py is its Celery shell.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from genq.queue import PublishError
from genq.schema import utcnow
from genq.webhook_deliveries import DeliveryStore
from genq.webhook_dispatch import COUNTDOWN_MAX_S, WebhookPublisher
from genq.webhook_secrets import SecretStore
from genq.webhooks import AllowList, RetryPolicy, deliver, event_body
from genq.webhooks.deliver import DEFAULT_TIMEOUT

log = logging.getLogger(__name__)


@dataclass
class DeliveryContext:
    deliveries: DeliveryStore
    secrets: SecretStore
    allow: AllowList
    policy: RetryPolicy
    publisher: WebhookPublisher | None = None  # None: retries wait for the sweep
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT


def run_delivery(delivery_id: str, ctx: DeliveryContext) -> str:
    """Make the next attempt of `delivery_id` if it is due and unclaimed; returns the attempt's outcome
    (`succeeded`, `retry`, `failed`, `gone`) or `skipped`."""
    delivery = ctx.deliveries.claim(delivery_id)
    if delivery is None:
        return "skipped"
    secrets = [s.secret for s in ctx.secrets.signing()]
    attempt = deliver(
        delivery.url, event_body(delivery.payload), delivery.webhook_id, secrets, ctx.allow, ctx.timeout,
        attempt=delivery.attempt_count + 1, policy=ctx.policy,
    )
    redispatch_at = None
    countdown = None
    if attempt.next_retry_at is not None and ctx.publisher is not None:
        countdown = max(0.0, (attempt.next_retry_at - utcnow()).total_seconds())
        if countdown <= COUNTDOWN_MAX_S:
            redispatch_at = attempt.next_retry_at
        else:
            countdown = None
    ctx.deliveries.record_attempt(delivery_id, attempt, redispatch_at)
    if countdown is not None and ctx.publisher is not None:
        try:
            ctx.publisher.publish(delivery_id, countdown=countdown)
        except PublishError as e:
            log.warning("retry of webhook delivery %s not published (the sweep will): %s", delivery_id, e)
    log.info("webhook delivery %s attempt %d: %s%s", delivery_id, attempt.number, attempt.outcome,
             f" (retry in {(attempt.next_retry_at - attempt.started_at) / timedelta(seconds=1):.1f}s)"
             if attempt.next_retry_at else "")
    return attempt.outcome
