"""One webhook delivery attempt, end to end: claim, sign and send (genq.webhooks.deliver), record, reschedule.

Celery-free, so it reads plainly and tests call it directly; workers/webhook_tasks.py is its Celery shell.

Through a database outage: a delivery that cannot be claimed is left to the sweep (its row is pending, so the
sweep publishes it again once the database answers); an attempt already made is recorded with retries for as
long as the delivery's lease lasts, since until then no one else may send it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from genq.broker import PublishError
from genq.store.db_errors import is_unavailable
from genq.store.db_retry import OutageLog, retry_while_unavailable
from genq.store.schema import utcnow
from genq.webhooks import AllowList, RetryPolicy, deliver, event_body
from genq.webhooks.deliver import DEFAULT_TIMEOUT
from genq.webhooks.dispatch import COUNTDOWN_MAX_S, WebhookPublisher
from genq.webhooks.outbox import DEFAULT_LEASE_S, DeliveryStore
from genq.webhooks.secret_store import SecretStore

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
    (`succeeded`, `retry`, `failed`, `gone`), `skipped`, or `deferred` (the database is unavailable)."""
    claimed = time.monotonic()
    try:
        delivery = ctx.deliveries.claim(delivery_id, lease_s=DEFAULT_LEASE_S)
    except Exception as e:
        if not is_unavailable(e):
            raise
        log.warning("webhook delivery %s deferred to the sweep: the database is unavailable", delivery_id)
        return "deferred"
    if delivery is None:
        return "skipped"
    secrets = [s.secret for s in ctx.secrets.signing(owner=ctx.deliveries.owner(delivery))]  # its key's own
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
    # recorded while the lease holds (after it, the sweep may send the delivery again, and the record is moot)
    retry_while_unavailable(lambda: ctx.deliveries.record_attempt(delivery_id, attempt, redispatch_at),
                            OutageLog(log, f"webhook delivery {delivery_id}: recording attempt {attempt.number}"),
                            give_up_after=max(0.0, DEFAULT_LEASE_S - 5.0 - (time.monotonic() - claimed)))
    if countdown is not None and ctx.publisher is not None:
        try:
            ctx.publisher.publish(delivery_id, countdown=countdown)
        except PublishError as e:
            log.warning("retry of webhook delivery %s not published (the sweep will): %s", delivery_id, e)
    log.info("webhook delivery %s attempt %d: %s%s", delivery_id, attempt.number, attempt.outcome,
             f" (retry in {(attempt.next_retry_at - attempt.started_at) / timedelta(seconds=1):.1f}s)"
             if attempt.next_retry_at else "")
    return attempt.outcome
