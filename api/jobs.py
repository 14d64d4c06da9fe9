"""/v1/jobs: submit, read, list and cancel jobs. A job's event stream (api/job_events.py) and its webhook
deliveries (api/deliveries.py) are blueprints nested in this one: /v1/jobs/{id}/events, /v1/jobs/{id}/deliveries."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, jsonify, request, url_for

from api import deliveries, job_events
from api.auth import current_key_id, current_quota
from api.errors import ApiError
from api.list_query import parse_list_query
from api.parsing import json_body, parse_new_job
from api.prefer import is_finished, wait_preference, wait_until_finished
from api.presenting import job_json, jobs_json
from api.quota_limits import quota_error
from api.scoping import owned_job
from api.services import services
from genq.store.idempotency import (
    HEADER as IDEMPOTENCY_HEADER,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    request_hash,
    validate_key,
)
from genq.store.leases import CancelOutcome, request_cancel
from genq.store.listing import CursorError, list_jobs
from genq.store.quotas import QuotaExceeded
from genq.submit import submit_job

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.register_blueprint(job_events.bp)
bp.register_blueprint(deliveries.bp)


@bp.post("")
def create_job() -> Response:
    svc = services()
    body = json_body(request)
    new = parse_new_job(body, svc.catalog, svc.settings.max_metadata_bytes, svc.settings.webhook_allow)
    wait_s = wait_preference(request.headers.get("Prefer"))
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        try:
            key = validate_key(key)
        except IdempotencyKeyInvalid as e:
            raise ApiError(422, "invalid_value", str(e), IDEMPOTENCY_HEADER) from None

    try:
        job, created = submit_job(svc.store, svc.publisher, new, idempotency_key=key,
                                  body_hash=request_hash(body) if key is not None else "", quota=current_quota(),
                                  relay=svc.relay)
    except QuotaExceeded as e:
        raise quota_error(e) from None
    except IdempotencyKeyReused as e:
        raise ApiError(422, "idempotency_key_reused", str(e), IDEMPOTENCY_HEADER) from None
    replayed = not created
    if created:
        svc.queue_positions.added([job])

    if wait_s is not None:
        job = wait_until_finished(svc.store, job, wait_s)
    response = jsonify(job_json(job))
    # 200: the job is finished (Prefer: wait, or a replay of a finished one); 202: it is queued or running
    response.status_code = 200 if is_finished(job) else 202
    response.headers["Location"] = url_for("jobs.get_job", job_id=job.id)
    if wait_s is not None:
        response.headers["Preference-Applied"] = f"wait={wait_s}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(job_json(owned_job(job_id)))


@bp.get("")
def list_all() -> Response:
    store = services().store
    where, limit, cursor = parse_list_query(request.args)
    where = dataclasses.replace(where, owner=current_key_id())
    try:
        jobs, next_cursor = list_jobs(store, where, limit, cursor)
    except CursorError as e:
        raise ApiError(422, "invalid_value", str(e), "cursor") from None
    return jsonify({"object": "list", "data": jobs_json(store, jobs), "next_cursor": next_cursor,
                    "has_more": next_cursor is not None})


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> Response:
    """200 with the canceled job (also when it already was); 202 with the running job whose worker is stopping
    it; 409 `job_finished` if it had already ended otherwise."""
    store = services().store
    owned_job(job_id)  # another key's job is not found (its owner never changes)
    outcome, job = request_cancel(store, job_id)
    if job is None or outcome is CancelOutcome.NOT_FOUND:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    if outcome is CancelOutcome.FINISHED:
        raise ApiError(409, "job_finished", f"the job already ended as {job.status}; only queued or running jobs "
                       "can be canceled")
    response = jsonify(job_json(job))
    response.status_code = 200 if outcome is CancelOutcome.CANCELED else 202
    return response
