"""/v1/jobs/{id}/deliveries: a job's webhook deliveries with every attempt, and redelivery."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from api.errors import ApiError
from api.scoping import owned_job
from api.services import services
from genq.broker import PublishError
from genq.serialize import iso
from genq.store.schema import WebhookAttempt, WebhookDelivery
from genq.webhooks.outbox import RedeliverRefused

bp = Blueprint("deliveries", __name__)  # nested in api.jobs: /v1/jobs/<job_id>/deliveries


@bp.get("/<job_id>/deliveries")
def list_deliveries(job_id: str) -> Response:
    svc = services()
    _require_job(job_id)
    data = [delivery_to_dict(r.delivery, r.attempts) for r in svc.deliveries.for_job(job_id)]
    return jsonify({"object": "list", "data": data})


@bp.post("/<job_id>/deliveries/<delivery_id>/redeliver")
def redeliver(job_id: str, delivery_id: str) -> Response:
    """Send the same message (same `webhook-id` and body) again, as a new delivery with a fresh schedule."""
    svc = services()
    _require_job(job_id)
    try:
        copy = svc.deliveries.redeliver(job_id, delivery_id)
    except KeyError:
        raise ApiError(404, "delivery_not_found", f"job {job_id} has no delivery {delivery_id!r}") from None
    except RedeliverRefused as e:
        raise ApiError(409, e.code, str(e)) from None
    try:
        svc.webhook_publisher.publish(copy.id)
    except PublishError:
        pass  # recorded and due: the sweep publishes it
    response = jsonify(delivery_to_dict(copy, []))
    response.status_code = 202
    return response


def delivery_to_dict(d: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": d.id,
        "object": "webhook_delivery",
        "job_id": d.job_id,
        "event": d.event,
        "webhook_id": d.webhook_id,
        "url": d.url,
        "status": d.status,
        "attempt_count": d.attempt_count,
        "next_attempt_at": iso(d.next_attempt_at),
        "redelivery_of": d.redelivery_of,
        "created_at": iso(d.created_at),
        "updated_at": iso(d.updated_at),
        "attempts": [
            {
                "number": a.number,
                "started_at": iso(a.started_at),
                "outcome": a.outcome,
                "status_code": a.status_code,
                "error": a.error,
                "duration_s": round(a.duration_s, 4),
                "response_excerpt": a.response_excerpt,
                "next_retry_at": iso(a.next_retry_at),
            }
            for a in attempts
        ],
    }


def _require_job(job_id: str) -> None:
    owned_job(job_id)
