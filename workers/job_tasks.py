"""The Celery task: a thin shell around workers.job_runner.execute_job. Never imports the Flask app."""
from __future__ import annotations

from celery import Celery, Task

from genq.broker import TASK_NAME
from workers.context import worker_context
from workers.job_runner import execute_job


def register(app: Celery) -> Task:
    """Register `genq.run_job` on `app` (whose `genq_settings` attribute holds the Settings)."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(self: Task, job_id: str) -> str:
        ctx = worker_context(self.app.genq_settings)
        return execute_job(
            job_id, ctx.store, ctx.host, ctx.worker_id, ctx.settings.job_timeout,
            keeper=ctx.keeper, lease_seconds=ctx.settings.lease_seconds, events=ctx.events,
        ).value

    return run_job
