"""/openai/v1/batches: OpenAI's Batch API on genq's own batches (genq/store/batches.py, genq.submit.submit_batch).

`batches.create` reads the uploaded input file, validates every line before anything is created (a bad line is
a 400 naming it, `param` `line[3].body.temperature`, where OpenAI would accept the batch and fail it later),
then submits all its jobs in one transaction: the batch is a genq batch (same id, `GET /v1/batches/{id}`), its
jobs are genq jobs. Status: `in_progress` until every job is final, then `completed`; after a cancel,
`cancelling`, then `cancelled`. The output and error files are api/openai/files.py's.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.batch_parsing import parse_batch
from api.errors import ApiError
from api.openai.batch_lines import ENDPOINTS
from api.openai.caller import caller, quota
from api.openai.errors import OpenAIError, from_api_error
from api.openai.files import ERRORS, OUTPUT, batch_file_id
from api.parsing import json_body, parse_metadata
from api.quota_limits import quota_error
from api.services import services
from genq.ids import new_id
from genq.store.batches import BatchStore, BatchView
from genq.store.openai_batches import OpenAIBatchStore
from genq.store.openai_files import FileStore
from genq.store.quotas import QuotaExceeded
from genq.store.schema import OpenAIBatch, utcnow
from genq.submit import submit_batch
from models.echo import short

bp = Blueprint("openai_batches", __name__)

WINDOWS = {"24h": timedelta(hours=24)}
DEFAULT_LIST, MAX_LIST = 20, 100
_CREATE_FIELDS = ("input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after")


@bp.post("/batches")
def create() -> Response:
    svc = services()
    try:
        body = json_body(request)
    except ApiError as e:
        raise OpenAIError(400, e.message, e.code) from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object", "invalid_body")
    for key in body:
        if key not in _CREATE_FIELDS:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {short(key)}", "unknown_parameter",
                              str(key)[:64])
    endpoint, window = body.get("endpoint"), body.get("completion_window")
    if endpoint not in ENDPOINTS:
        raise OpenAIError(400, f"endpoint must be one of {', '.join(ENDPOINTS)}", "invalid_value", "endpoint")
    if window not in WINDOWS:
        raise OpenAIError(400, "completion_window must be 24h", "invalid_value", "completion_window")
    file_id = body.get("input_file_id")
    owner = caller()
    files = FileStore(svc.sessions)
    info = files.get(file_id, owner) if isinstance(file_id, str) else None
    content = files.content(info.id, owner) if info is not None else None
    if info is None or content is None:
        raise OpenAIError(404, f"No such File object: {short(file_id)}", "file_not_found", "input_file_id")
    if info.purpose != "batch":
        raise OpenAIError(400, "the input file's purpose must be batch", "invalid_value", "input_file_id")
    metadata = parse_metadata(body.get("metadata"), svc.settings.max_metadata_bytes)
    lines = parse_batch(content, svc.catalog, max_lines=svc.settings.batch_max_lines,
                        max_metadata_bytes=svc.settings.max_metadata_bytes, webhook_allow=svc.settings.webhook_allow,
                        openai_endpoint=endpoint)
    batch_id = new_id()
    record = OpenAIBatch(batch_id=batch_id, endpoint=endpoint, input_file_id=info.id, completion_window=window,
                         owner=owner, created_at=utcnow())
    try:
        submit_batch(svc.store, svc.publisher, lines, metadata, batch_id=batch_id, also=[record], quota=quota(),
                     relay=svc.relay)
    except QuotaExceeded as e:  # the whole batch, before any of it was created
        raise from_api_error(quota_error(e)) from None
    return jsonify(_object(batch_id))


@bp.get("/batches/<batch_id>")
def retrieve(batch_id: str) -> Response:
    return jsonify(_object(batch_id))


@bp.post("/batches/<batch_id>/cancel")
def cancel(batch_id: str) -> Response:
    svc = services()
    record, view = _find(batch_id)
    if view.completed_at is None:  # a finished batch stays completed
        OpenAIBatchStore(svc.sessions).cancel(svc.store, batch_id)
    return jsonify(_object(batch_id))


@bp.get("/batches")
def list_batches() -> Response:
    raw = request.args.get("limit")
    if raw is not None and (not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST):
        raise OpenAIError(400, f"limit must be an integer in [1, {MAX_LIST}]", "invalid_value", "limit")
    limit = int(raw) if raw is not None else DEFAULT_LIST
    records = OpenAIBatchStore(services().sessions).list(caller(), limit + 1, request.args.get("after"))
    data = [_object(r.batch_id) for r in records[:limit]]
    return jsonify({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None, "has_more": len(records) > limit})


def _find(batch_id: str) -> tuple[OpenAIBatch, BatchView]:
    svc = services()
    record = OpenAIBatchStore(svc.sessions).get(batch_id, caller())
    view = BatchStore(svc.sessions).view(batch_id) if record is not None else None
    if record is None or view is None:
        raise OpenAIError(404, f"No such Batch object: {short(batch_id)}", "batch_not_found", "batch_id")
    return record, view


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _object(batch_id: str) -> dict[str, Any]:
    record, view = _find(batch_id)
    counts = view.counts
    finished = view.completed_at is not None
    cancelled = record.cancel_requested_at is not None
    failed = counts["failed"] + counts["canceled"] + counts["expired"]
    if cancelled:
        status = "cancelled" if finished else "cancelling"
    else:
        status = "completed" if finished else "in_progress"
    created = record.created_at
    return {
        "id": batch_id, "object": "batch", "endpoint": record.endpoint, "errors": None,
        "input_file_id": record.input_file_id, "completion_window": record.completion_window, "status": status,
        "output_file_id": batch_file_id(batch_id, OUTPUT) if finished and counts["succeeded"] else None,
        "error_file_id": batch_file_id(batch_id, ERRORS) if finished and failed else None,
        "created_at": _ts(created), "in_progress_at": _ts(created),
        "expires_at": _ts(created + WINDOWS[record.completion_window]),
        "finalizing_at": None, "completed_at": _ts(view.completed_at) if finished and not cancelled else None,
        "failed_at": None, "expired_at": None, "cancelling_at": _ts(record.cancel_requested_at),
        "cancelled_at": _ts(view.completed_at) if finished and cancelled else None,
        "request_counts": {"total": counts["total"], "completed": counts["succeeded"], "failed": failed},
        "metadata": view.batch.client_metadata,
    }
