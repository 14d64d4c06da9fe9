"""GET /v1/openapi.json: the OpenAPI 3.1 document of this API, built from the code's own limits.

`build_document(settings, served_models)` makes it; the schemas are in api/openapi_schemas.py. The document
is built for the running service (its models, its size limits), so it states what this instance accepts.
Every Flask route is described and every described path is a route (tests/service/test_openapi.py), and
schemathesis checks the live app against it (tests/service/test_openapi_schemathesis.py).
"""
from __future__ import annotations

from typing import Any, Sequence

from flask import Blueprint, Response, jsonify

from api.batches import JSONL_TYPES
from api.openapi_schemas import Schema, component_schemas, ref
from api.services import services
from genq.config import Settings

bp = Blueprint("openapi", __name__, url_prefix="/v1")

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
SSE = "text/event-stream"


def _json(schema: Schema, description: str, **extra: Any) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _error(description: str) -> Schema:
    return _json(ref("Error"), description)


def _header(description: str, required: bool = True) -> Schema:
    return {"description": description, "required": required, "schema": {"type": "string"}}


INTERNAL = {"500": {"$ref": "#/components/responses/InternalError"}}


def _path_param(name: str, what: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
            "description": f"the {what}'s id (a UUID); any other value is a 404"}


JOB_ID = _path_param("job_id", "job")


def _sse_event(kind: str, data: Schema) -> Schema:
    """One Server-Sent Event as a client's parser gives it: its type, its id, its data (JSON text)."""
    return {
        "type": "object",
        "properties": {
            "event": {"const": kind},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": {"type": "string", "contentMediaType": JSON, "contentSchema": data},
        },
        "required": ["event", "id", "data"],
    }


def _jobs(settings: Settings) -> dict[str, Schema]:
    create = {
        "operationId": "createJob",
        "summary": "Submit a generation job",
        "description": "Validates the body, resolves the generation parameters (request over the model's "
                       "generation config over the service's defaults), records the job as `queued` and queues it.",
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("JobRequest")}}},
        "responses": {
            "202": _json(ref("Job"), "The job, queued.",
                         headers={"Location": _header("the job's URL (GET /v1/jobs/{job_id})")}),
            "400": _error("`invalid_json`: the body does not parse as JSON."),
            "413": _error(f"`payload_too_large`: the body is over {settings.max_body_bytes} bytes."),
            "415": _error("`unsupported_media_type`: the body is not declared `application/json`."),
            "422": _error("The body is not a valid job: `invalid_body`, `unknown_field`, `invalid_value`, "
                          "`invalid_input`, `unknown_model`, `invalid_param`, `webhook_url_invalid`, "
                          "`webhook_url_forbidden`, `webhook_url_unresolvable`, `webhook_events_filter_invalid`; "
                          "`field` names the field."),
            "503": _error("`queue_unavailable`: the broker refused the job; it was recorded as failed."),
            **INTERNAL,
        },
    }
    get = {
        "operationId": "getJob",
        "summary": "Read a job",
        "parameters": [JOB_ID],
        "responses": {"200": _json(ref("Job"), "The job."), "404": _error("`job_not_found`."), **INTERNAL},
    }
    resume = {"type": "string", "pattern": "^[0-9]{1,18}$"}
    events = {
        "operationId": "streamJobEvents",
        "summary": "The job's events as Server-Sent Events",
        "description": "A `retry:` hint, then one frame per event: `event: status` (data: StatusEvent), "
                       "`event: delta` (data: DeltaEvent, text as generated), and at the final status "
                       "`event: done` (data: the Job), after which the stream ends. `id:` is the event's "
                       "per-job sequence number. Comment lines (`: keep-alive`) are sent during silence.",
        "parameters": [
            JOB_ID,
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": resume,
             "description": "resume after this event id (EventSource sends it on reconnect)"},
            {"name": "last_event_id", "in": "query", "required": False, "schema": resume,
             "description": "as `Last-Event-ID`, for clients that cannot set headers; the header wins"},
        ],
        "responses": {
            "200": {"description": "The event stream, live until the job's final status. The schema describes "
                                   "each event (`event`, `id`, `data` as JSON), as OpenAPI 3.2's itemSchema does.",
                    "headers": {"Cache-Control": _header("`no-cache`")},
                    "content": {SSE: {"schema": {"oneOf": [
                        _sse_event("status", ref("StatusEvent")),
                        _sse_event("delta", ref("DeltaEvent")),
                        _sse_event("done", ref("Job")),
                    ]}}}},
            "400": _error("`invalid_last_event_id`: not a non-negative integer."),
            "404": _error("`job_not_found`."),
            **INTERNAL,
        },
    }
    deliveries = {
        "operationId": "listJobDeliveries",
        "summary": "The job's webhook deliveries, each with every attempt",
        "parameters": [JOB_ID],
        "responses": {"200": _json(ref("WebhookDeliveryList"), "Oldest first."),
                      "404": _error("`job_not_found`."), **INTERNAL},
    }
    redeliver = {
        "operationId": "redeliverWebhook",
        "summary": "Send a delivery's message again (same `webhook-id` and body), with a fresh schedule",
        "parameters": [JOB_ID, _path_param("delivery_id", "delivery")],
        "responses": {
            "202": _json(ref("WebhookDelivery"), "The new delivery, due now."),
            "404": _error("`job_not_found`, or `delivery_not_found` (the job has no such delivery)."),
            "409": _error("`delivery_pending`: that message is still being delivered."),
            **INTERNAL,
        },
    }
    return {
        "/v1/jobs": {"post": create},
        "/v1/jobs/{job_id}": {"get": get},
        "/v1/jobs/{job_id}/events": {"get": events},
        "/v1/jobs/{job_id}/deliveries": {"get": deliveries},
        "/v1/jobs/{job_id}/deliveries/{delivery_id}/redeliver": {"post": redeliver},
    }


def _batches(settings: Settings) -> dict[str, Schema]:
    jsonl = {"type": "string", "description": "One BatchLine (see components) per line, as JSON; blank lines are "
             f"skipped; at most {settings.batch_max_lines} lines."}
    example = '{"custom_id": "a", "prompt": "Hi"}\n{"custom_id": "b", "prompt": "Bye"}\n'
    body = {mime: {"schema": jsonl, "example": example} for mime in JSONL_TYPES}
    body["multipart/form-data"] = {"schema": {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary", "description": "the JSONL file"},
                       "metadata": {"type": "string", "description": "the batch's metadata, a JSON object"}},
        "required": ["file"],
    }}
    create = {
        "operationId": "createBatch",
        "summary": "Submit many jobs as one JSONL file",
        "description": "Every line is validated before anything is created; then all jobs are created in one "
                       "transaction and queued.",
        "parameters": [{"name": "metadata", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "the batch's metadata as a JSON object (with a JSONL body); at most "
                                       f"{settings.max_metadata_bytes} bytes"}],
        "requestBody": {"required": True, "content": body},
        "responses": {
            "202": _json(ref("Batch"), "The batch, its jobs queued.",
                         headers={"Location": _header("the batch's URL (GET /v1/batches/{batch_id})")}),
            "400": _error("`bad_request`: a malformed multipart body."),
            "413": _error(f"`payload_too_large` (over {settings.batch_max_bytes} bytes) or `too_many_lines`."),
            "415": _error("`unsupported_media_type`: neither JSONL nor multipart/form-data."),
            "422": _error("A bad line (`field` is `line[N]` or `line[N].<field>`, the message starts `line N:`), "
                          "`empty_batch`, `missing_file`, `duplicate_custom_id`, or bad `metadata`."),
            "503": _error("`queue_unavailable`: some jobs could not be queued; they were marked failed."),
            **INTERNAL,
        },
    }
    batch_id = _path_param("batch_id", "batch")
    get = {
        "operationId": "getBatch",
        "summary": "A batch's status and counts of its jobs by status",
        "parameters": [batch_id],
        "responses": {"200": _json(ref("Batch"), "The batch."), "404": _error("`batch_not_found`."), **INTERNAL},
    }
    results = {
        "operationId": "getBatchResults",
        "summary": "The batch's jobs as JSONL, in file order",
        "description": "One BatchResultLine (see components) per line; unfinished jobs show their current status.",
        "parameters": [batch_id],
        "responses": {
            "200": {"description": "JSONL, one `{\"custom_id\", \"job\"}` object per line.",
                    "headers": {"Content-Disposition": _header("an attachment file name")},
                    "content": {"application/jsonl": {"schema": {"type": "string"}}}},
            "404": _error("`batch_not_found`."),
            **INTERNAL,
        },
    }
    return {
        "/v1/batches": {"post": create},
        "/v1/batches/{batch_id}": {"get": get},
        "/v1/batches/{batch_id}/results": {"get": results},
    }


def _service() -> dict[str, Schema]:
    secret = _json(ref("WebhookSecret"), "The current signing secret and the older ones still signing.")
    return {
        "/v1/webhooks/secret": {"get": {"operationId": "getWebhookSecret", "summary": "The webhook signing secret",
                                        "responses": {"200": secret, **INTERNAL}}},
        "/v1/webhooks/secret/rotate": {"post": {
            "operationId": "rotateWebhookSecret",
            "summary": "Make a new current secret; the previous one keeps signing for the grace period",
            "responses": {"200": secret, **INTERNAL}}},
        "/v1/models": {"get": {"operationId": "listModels", "summary": "The served models",
                               "responses": {"200": _json(ref("ModelList"), "Sorted by name."), **INTERNAL}}},
        "/healthz": {"get": {"operationId": "health", "summary": "The API answers and its database is reachable",
                             "responses": {"200": _json(ref("Health"), "Healthy."),
                                           "503": _error("`database_unavailable`."), **INTERNAL}}},
        "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                     "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1."), **INTERNAL}}},
    }


def build_document(settings: Settings, served_models: Sequence[str]) -> dict[str, Any]:
    """The OpenAPI document of the API as configured by `settings`, serving `served_models`."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "genq",
            "version": "v1",
            "description": "Asynchronous LLM text generation jobs. Every error is `{\"error\": {\"code\", "
                           "\"message\", \"field\"?}}`.",
        },
        "paths": {**_jobs(settings), **_batches(settings), **_service()},
        "components": {
            "schemas": component_schemas(served_models, settings.max_metadata_bytes),
            "responses": {"InternalError": _error("`internal_error`: a bug or an outage (logged in full).")},
        },
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    svc = services()
    return jsonify(build_document(svc.settings, [m.name for m in svc.catalog.all()]))
