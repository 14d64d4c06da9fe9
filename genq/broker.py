"""The broker side shared by the API (publishes) and the workers (consume): Celery configuration and queues.

A message carries only the job id; everything else is in the database. Each model has its own queue,
`genq.model.<name>`, so a worker consumes only the models it serves. The API publishes by task name and
never imports the worker code (which imports torch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from genq.lifecycle import PRIORITY_MAX, PRIORITY_MIN, broker_priority
from genq.settings import Settings

TASK_NAME = "genq.run_job"
FILESYSTEM_SCHEME = "filesystem://"


class PublishError(RuntimeError):
    """The broker did not accept the message."""


def queue_name(model: str) -> str:
    """The broker queue the jobs of model `model` are published on (and its workers consume)."""
    return f"genq.model.{model}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for both sides: late acknowledgement, one message at a time per thread."""
    broker_url, transport_options = broker_connection(settings)
    return {
        "broker_url": broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # a message is acknowledged after its task stored the result; a lost worker's messages come back
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,  # results live in the database, not in a result backend
        "result_backend": None,
        "task_default_queue": queue_name(settings.default_model),
        "task_create_missing_queues": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_enable_remote_control": False,  # no pidbox fan-out queues: fewer broker keys, no file-system fanout
        "broker_heartbeat": 0,
    }


def broker_connection(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The kombu URL and transport options for `settings.broker_url`.

    `filesystem://<folder>` (relative to the working directory, or absolute) is kombu's file-system
    transport rooted at that folder; `redis://…` gets a visibility timeout longer than any job and the
    optional key prefix.
    """
    url = settings.broker_url
    if url.startswith(FILESYSTEM_SCHEME):
        root = Path(url[len(FILESYSTEM_SCHEME):] or "./var/broker").expanduser().resolve()
        queue_dir, control_dir = root / "queue", root / "control"
        for d in (queue_dir, control_dir):
            d.mkdir(parents=True, exist_ok=True)
        return "filesystem://localhost/", {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
            "polling_interval": 0.1,
        }
    options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://")):
        options["visibility_timeout"] = settings.broker_visibility_timeout
        # one Redis list per message priority, popped in this order (kombu: 0 first; see broker_priority).
        # queue_order_strategy stays round-robin: it orders a worker's model queues among themselves, and
        # every queue's higher-priority list is still popped before any queue's lower one.
        options["priority_steps"] = list(range(PRIORITY_MAX - PRIORITY_MIN + 1))
        if settings.broker_key_prefix:
            options["global_keyprefix"] = settings.broker_key_prefix
    return url, options


def make_celery(settings: Settings, main: str = "genq") -> Celery:
    """A Celery app configured for `settings` (no tasks registered: see workers.celery_app)."""
    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app


class Publisher:
    """Publishes job ids on their model's queue."""

    def __init__(self, app: Celery):
        self._app = app

    @property
    def app(self) -> Celery:
        """The Celery app it publishes through (e.g. to check the broker: genq/health.py)."""
        return self._app

    def publish(self, job_id: str, model: str, priority: int = 0) -> None:
        """Send the job id to `genq.model.<model>` at the job's priority (0..9, higher first; honoured by
        Redis, ignored by the file-system broker); raises PublishError if the broker refuses."""
        try:
            self._app.send_task(
                TASK_NAME,
                args=[job_id],
                queue=queue_name(model),
                priority=broker_priority(priority),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 1.0},
            )
        except Exception as e:  # kombu raises many types (OperationalError, OSError, ...): all mean "not sent"
            raise PublishError(f"{type(e).__name__}: {e}") from e
