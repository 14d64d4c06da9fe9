"""/v1/jobs: list jobs (filters, cursor pages) and cancel a job."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.errors import ApiError
from api.list_query import parse_list_query
from api.presenting import job_json, jobs_json
from api.services import services
from genq.store.leases import CancelOutcome, request_cancel
from genq.store.listing import CursorError, list_jobs

bp = Blueprint("job_lifecycle", __name__, url_prefix="/v1/jobs")


@bp.get("")
def list_all() -> Response:
    store = services().store
    where, limit, cursor = parse_list_query(request.args)
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
    outcome, job = request_cancel(store, job_id)
    if job is None or outcome is CancelOutcome.NOT_FOUND:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    if outcome is CancelOutcome.FINISHED:
        raise ApiError(409, "job_finished", f"the job already ended as {job.status}; only queued or running jobs "
                       "can be canceled")
    response = jsonify(job_json(store, job))
    response.status_code = 200 if outcome is CancelOutcome.CANCELED else 202
    return response
