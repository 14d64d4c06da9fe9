"""/openai/v1/files: upload a batch's input (purpose `batch`), read any file back, and a batch's output and
error files, which are written from its jobs when asked for (so they exist once the batch does, and always
agree with /v1/jobs).

Output line (a request that succeeded):
    {"id": "batch_req_<job id>", "custom_id", "response": {"status_code": 200, "request_id": <job id>,
     "body": <chat.completion | text_completion>}, "error": null}
Error line: a failed job as the error response its request would have had (`response.status_code` 4xx/5xx,
`body.error`); a canceled or expired one with `response: null` and `error: {"code", "message"}`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session, sessionmaker

from api.openai.caller import caller
from api.openai.errors import OpenAIError, error_body
from api.openai.objects import completion_object
from api.openai.waiting import job_error
from api.services import services
from genq.status import JobStatus
from genq.store.batches import BatchStore
from genq.store.openai_batches import OpenAIBatchStore
from genq.store.openai_files import FileInfo, FileStore
from genq.store.schema import Job, OpenAIBatch
from models.echo import short

bp = Blueprint("openai_files", __name__)

PURPOSES = ("batch",)
OUTPUT, ERRORS = "output", "errors"
_BATCH_FILE = "file-batch-"
MAX_LIST = 10_000


def batch_file_id(batch_id: str, which: str) -> str:
    """The id of a batch's output or error file."""
    return f"{_BATCH_FILE}{batch_id}-{which}"


def _batch_file(file_id: str) -> tuple[str, str] | None:
    """(batch id, which) of a batch file's id, else None."""
    if not file_id.startswith(_BATCH_FILE):
        return None
    batch_id, _, which = file_id[len(_BATCH_FILE):].rpartition("-")
    return (batch_id, which) if which in (OUTPUT, ERRORS) else None


def file_object(info: FileInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "file", "bytes": info.bytes, "created_at": int(info.created_at.timestamp()),
            "filename": info.filename, "purpose": info.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


@bp.post("/files")
def upload() -> Response:
    svc = services()
    request.max_content_length = svc.settings.batch_max_bytes
    if request.mimetype != "multipart/form-data":
        raise OpenAIError(400, "upload the file as multipart/form-data with `file` and `purpose` fields",
                          "unsupported_media_type")
    purpose, upload = request.form.get("purpose"), request.files.get("file")
    if purpose not in PURPOSES:
        raise OpenAIError(400, f"purpose must be one of {', '.join(PURPOSES)} (files are batch inputs here)",
                          "invalid_value", "purpose")
    if upload is None:
        raise OpenAIError(400, "the form has no `file` part", "missing_file", "file")
    content = upload.read()
    filename = (upload.filename or "upload.jsonl")[:255]
    info = FileStore(svc.sessions).create(purpose, filename, content, caller())
    return jsonify(file_object(info))


@bp.get("/files")
def list_files() -> Response:
    limit = _limit(request.args.get("limit"))
    infos = FileStore(services().sessions).list(caller(), limit + 1, request.args.get("purpose"),
                                                request.args.get("after"))
    data = [file_object(i) for i in infos[:limit]]
    return jsonify({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None, "has_more": len(infos) > limit})


@bp.get("/files/<file_id>")
def get_file(file_id: str) -> Response:
    batch_file = _batch_file(file_id)
    if batch_file is not None:
        text = "".join(_batch_lines(*batch_file))
        return jsonify({"id": file_id, "object": "file", "bytes": len(text.encode()),
                        "created_at": int(_openai_batch(batch_file[0]).created_at.timestamp()),
                        "filename": f"batch_{batch_file[0]}_{batch_file[1]}.jsonl",
                        "purpose": "batch_output", "status": "processed", "expires_at": None,
                        "status_details": None})
    info = FileStore(services().sessions).get(file_id, caller())
    if info is None:
        raise _not_found(file_id)
    return jsonify(file_object(info))


@bp.get("/files/<file_id>/content")
def file_content(file_id: str) -> Response:
    batch_file = _batch_file(file_id)
    if batch_file is not None:
        return Response(_batch_lines(*batch_file), mimetype="application/jsonl")
    content = FileStore(services().sessions).content(file_id, caller())
    if content is None:
        raise _not_found(file_id)
    return Response(content, mimetype="application/octet-stream")


@bp.delete("/files/<file_id>")
def delete_file(file_id: str) -> Response:
    if _batch_file(file_id) is not None:
        raise OpenAIError(400, "a batch's output and error files are read from its jobs and cannot be deleted",
                          "invalid_value", "file_id")
    if not FileStore(services().sessions).delete(file_id, caller()):
        raise _not_found(file_id)
    return jsonify({"id": file_id, "object": "file", "deleted": True})


def _limit(raw: str | None) -> int:
    if raw is None:
        return MAX_LIST
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise OpenAIError(400, f"limit must be an integer in [1, {MAX_LIST}]", "invalid_value", "limit")
    return int(raw)


def _not_found(file_id: str) -> OpenAIError:
    return OpenAIError(404, f"No such File object: {short(file_id)}", "file_not_found", "file_id")


def _openai_batch(batch_id: str) -> OpenAIBatch:
    found = OpenAIBatchStore(services().sessions).get(batch_id, caller())
    if found is None:
        raise OpenAIError(404, f"No such File object: {short(_BATCH_FILE + batch_id)}", "file_not_found", "file_id")
    return found


def _batch_lines(batch_id: str, which: str) -> Iterator[str]:
    _openai_batch(batch_id)  # 404 unless the caller's OpenAI batch
    return _lines(services().sessions, batch_id, which)


def _lines(sessions: sessionmaker[Session], batch_id: str, which: str) -> Iterator[str]:
    store, after = BatchStore(sessions), 0
    while True:
        page = store.jobs(batch_id, after)
        if not page:
            return
        lines = [result_line(j) for j in page if _belongs(j, which)]
        if lines:
            yield "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        after = page[-1].batch_line or 0


def _belongs(job: Job, which: str) -> bool:
    if job.status not in JobStatus.TERMINAL:
        return False
    return (job.status == JobStatus.SUCCEEDED.value) == (which == OUTPUT)


def result_line(job: Job) -> dict[str, Any]:
    """One line of a batch's output or error file for a finished job."""
    line: dict[str, Any] = {"id": f"batch_req_{job.id}", "custom_id": job.custom_id, "response": None, "error": None}
    if job.status == JobStatus.SUCCEEDED.value:
        line["response"] = {"status_code": 200, "request_id": job.id, "body": completion_object(job)}
    elif job.status == JobStatus.FAILED.value:
        e = job_error(job)
        line["response"] = {"status_code": e.status, "request_id": job.id,
                            "body": error_body(e.status, e.message, e.code)}
    else:
        code = "batch_cancelled" if job.status == JobStatus.CANCELED.value else "batch_expired"
        line["error"] = {"code": code, "message": f"the request was not completed: its job is {job.status}"}
    return line
