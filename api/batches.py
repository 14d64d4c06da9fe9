"""/v1/batches: submit many jobs as one JSONL file, follow them together, download the results."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy.orm import Session, sessionmaker

from api.auth import current_key_id, current_quota
from api.batch_parsing import parse_batch
from api.errors import ApiError
from api.json_depth import TooDeep
from api.parsing import loads, parse_metadata
from api.quota_limits import quota_error
from api.services import services
from genq.serialize import iso, job_to_dict
from genq.store.batches import BatchStore, BatchView
from genq.store.quotas import QuotaExceeded
from genq.submit import submit_batch

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/x-jsonlines", "application/jsonlines")


@bp.post("")
def create_batch() -> Response:
    svc = services()
    request.max_content_length = svc.settings.batch_max_bytes  # a batch may be larger than one job's body
    raw, metadata = _upload()
    lines = parse_batch(
        raw, svc.catalog, max_lines=svc.settings.batch_max_lines,
        max_metadata_bytes=svc.settings.max_metadata_bytes, webhook_allow=svc.settings.webhook_allow,
    )
    try:
        batch_id = submit_batch(svc.store, svc.publisher, lines, metadata, quota=current_quota(), relay=svc.relay)
    except QuotaExceeded as e:  # the whole batch, before any of it was created
        raise quota_error(e) from None
    response = jsonify(batch_to_dict(_view(batch_id)))
    response.status_code = 202
    response.headers["Location"] = url_for("batches.get_batch", batch_id=batch_id)
    return response


@bp.get("/<batch_id>")
def get_batch(batch_id: str) -> Response:
    return jsonify(batch_to_dict(_view(batch_id)))


@bp.get("/<batch_id>/results")
def batch_results(batch_id: str) -> Response:
    """One JSON line per job, in the file's order: {"custom_id", "job": <the job object>} (partial while the
    batch is in progress: unfinished jobs show their current status)."""
    _view(batch_id)
    response = Response(_results(services().sessions, batch_id), mimetype="application/jsonl")
    response.headers["Content-Disposition"] = f'attachment; filename="batch_{batch_id}_results.jsonl"'
    return response


def batch_to_dict(view: BatchView) -> dict[str, Any]:
    return {
        "id": view.batch.id,
        "object": "batch",
        "status": view.status,
        "created_at": iso(view.batch.created_at),
        "completed_at": iso(view.completed_at),
        "counts": view.counts,
        "metadata": view.batch.client_metadata,
    }


def _view(batch_id: str) -> BatchView:
    view = BatchStore(services().sessions).view(batch_id, owner=current_key_id())  # another key's: not found
    if view is None:
        raise ApiError(404, "batch_not_found", f"no batch {batch_id!r}")
    return view


def _results(sessions: sessionmaker[Session], batch_id: str) -> Iterator[str]:
    store, after = BatchStore(sessions), 0
    while True:
        page = store.jobs(batch_id, after)
        if not page:
            return
        yield "".join(json.dumps({"custom_id": j.custom_id, "job": job_to_dict(j)}, ensure_ascii=False) + "\n"
                      for j in page)
        after = page[-1].batch_line or 0


def _upload() -> tuple[bytes, dict[str, Any] | None]:
    """The batch file and its metadata: a JSONL body (metadata in `?metadata=`) or a multipart form with a
    `file` part (metadata in a `metadata` field)."""
    svc = services()
    if request.mimetype in JSONL_TYPES:
        raw, metadata = request.get_data(cache=False), request.args.get("metadata")
    elif request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(422, "missing_file", "send the JSONL file as the form's `file` part", "file")
        raw, metadata = upload.read(), request.form.get("metadata")
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send the batch as JSONL (Content-Type: application/jsonl or application/x-ndjson) "
                       "or as a multipart/form-data upload with a `file` part")
    if metadata is None:
        return raw, None
    try:
        value = loads(metadata)
    except TooDeep as e:
        raise ApiError(422, "too_deep", f"the batch metadata {e}", "metadata") from None
    except ValueError as e:
        raise ApiError(422, "invalid_value", f"must be a JSON object: {e}", "metadata") from None
    return raw, parse_metadata(value, svc.settings.max_metadata_bytes)
