"""The webhook delivery task (queue `genq.webhooks`) and the sweep thread of workers that consume it.

Thin shells around genq.webhooks.delivery_runner.run_delivery and genq.webhooks.dispatch.DeliverySweeper.
"""
from __future__ import annotations

from celery import Celery, Task

from genq.webhooks.delivery_runner import run_delivery
from genq.webhooks.dispatch import DELIVER_TASK, DeliverySweeper
from workers.context import worker_context


def register(app: Celery) -> Task:
    """Register `genq.deliver_webhook` on `app` (whose `genq_settings` attribute holds the Settings)."""

    @app.task(name=DELIVER_TASK, bind=True, acks_late=True, ignore_result=True)
    def deliver_webhook(self: Task, delivery_id: str) -> str:
        return run_delivery(delivery_id, worker_context(self.app.genq_settings).webhooks)

    return deliver_webhook


def start_sweeper(app: Celery) -> DeliverySweeper:
    """Start publishing due deliveries that have no message, every GENQ_WEBHOOK_SWEEP_MS."""
    ctx = worker_context(app.genq_settings)
    webhooks = ctx.webhooks
    if webhooks.publisher is None:
        raise RuntimeError("the worker context has no webhook publisher")
    return DeliverySweeper(webhooks.deliveries, webhooks.publisher, ctx.settings.webhook_sweep_ms / 1000).start()
