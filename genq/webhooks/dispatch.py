"""Webhook messages on the broker: their own queue, publishing after commit, and the sweep.

Deliveries run on `genq.webhooks`, never on a model's queue, so a slow receiver holds a webhook worker thread,
not a generation one. Publishing is best effort: a delivery whose message never arrived (the broker was down
when its status change committed; a worker died mid-attempt; a retry too far off for a countdown) is found by
`sweep`, which workers consuming the webhook queue run every few seconds.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from celery import Celery

from genq.broker import PublishError
from genq.store.db_errors import is_unavailable
from genq.store.db_retry import OutageLog
from genq.webhooks.outbox import DeliveryStore

log = logging.getLogger(__name__)

DELIVER_TASK = "genq.deliver_webhook"
WEBHOOK_QUEUE = "genq.webhooks"
# Retries sooner than this are published at once with a countdown; later ones are left to the sweep, since
# Redis holds a delayed message unacknowledged and would redeliver one parked past its visibility timeout.
COUNTDOWN_MAX_S = 60.0
REDISPATCH_AFTER_S = 30.0  # a dispatched delivery still unclaimed after this is published again


class WebhookPublisher:
    """Publishes delivery ids on `genq.webhooks`."""

    def __init__(self, app: Celery):
        self._app = app

    def publish(self, delivery_id: str, countdown: float | None = None) -> None:
        """Send one delivery's id (after `countdown` seconds); raises PublishError if the broker refuses."""
        try:
            self._app.send_task(
                DELIVER_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE, countdown=countdown,
                retry=True, retry_policy={"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2},
            )
        except Exception as e:  # kombu raises many types: all mean "not sent"
            raise PublishError(f"{type(e).__name__}: {e}") from e

    def publish_many(self, delivery_ids: Iterable[str]) -> None:
        """Best effort, after the deliveries were committed: a failure is logged and left to the sweep."""
        for delivery_id in delivery_ids:
            try:
                self.publish(delivery_id)
            except PublishError as e:
                log.warning("webhook delivery %s not published (the sweep will): %s", delivery_id, e)
                return  # the broker is down; the rest would fail the same way


def sweep(deliveries: DeliveryStore, publisher: WebhookPublisher, limit: int = 200) -> int:
    """Publish every due delivery that no message is known to carry; returns how many were published."""
    ids = deliveries.mark_dispatch_due(redispatch_after_s=REDISPATCH_AFTER_S, limit=limit)
    for delivery_id in ids:
        publisher.publish(delivery_id)  # PublishError: the sweep's caller logs it and tries again later
    return len(ids)


class DeliverySweeper:
    """Runs `sweep` every `interval` seconds on a daemon thread until stopped."""

    def __init__(self, deliveries: DeliveryStore, publisher: WebhookPublisher, interval: float):
        self._deliveries, self._publisher, self._interval = deliveries, publisher, interval
        self._stop = threading.Event()
        self._outage = OutageLog(log, "webhook sweep")
        self._thread = threading.Thread(target=self._run, name="genq-webhook-sweep", daemon=True)

    def start(self) -> DeliverySweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                n = sweep(self._deliveries, self._publisher)
                if n:
                    log.info("webhook sweep published %d due deliveries", n)
            except Exception as e:  # a database or broker outage: try again next round
                if is_unavailable(e):
                    self._outage.failed(e)
                else:
                    log.warning("webhook sweep failed", exc_info=True)
                continue
            self._outage.recovered()
