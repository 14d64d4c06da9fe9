"""/v1/jobs: submit a job, read a job."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from api.errors import ApiError, error_response
from api.parsing import json_body, parse_new_job
from api.serialize import job_to_dict
from api.services import services
from genq.submit import QueueUnavailable, submit_job

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@bp.post("")
def create_job() -> Response:
    svc = services()
    new = parse_new_job(json_body(request), svc.catalog, svc.settings.max_metadata_bytes, svc.settings.webhook_allow)
    try:
        job = submit_job(
            svc.store, svc.publisher, model=new.model, input=new.input, params=new.params, metadata=new.metadata,
            webhook=new.webhook, webhook_events_filter=new.webhook_events_filter,
        )
    except QueueUnavailable as e:
        return error_response(503, "queue_unavailable", str(e))
    response = jsonify(job_to_dict(job))
    response.status_code = 202
    response.headers["Location"] = url_for("jobs.get_job", job_id=job.id)
    return response


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    job = services().store.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    return jsonify(job_to_dict(job))
